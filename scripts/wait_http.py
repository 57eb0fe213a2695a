"""Exit 0 if the URL answers 200 (used by the demo script to wait for the web server)."""

import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=2) as response:  # noqa: S310 - our own local URL
    sys.exit(0 if response.status == 200 else 1)
