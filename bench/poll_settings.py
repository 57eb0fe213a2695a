"""Settings of the idle-poll benchmark (bench/poll.py): the portal's own, plus one bare view.

The benchmark serves the product's settings and middleware unchanged; only the
root URLs add ``/bench/bare`` (bench/poll_urls.py), the yardstick the poll is
measured against. Never used by the product.
"""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.poll_urls"
