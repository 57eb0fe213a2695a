"""The provider's people: the JSON file named by ``OIDC_TEST_USERS``, read afresh each time."""

import json
import os
from pathlib import Path


def person(username: str) -> dict | None:
    people = json.loads(Path(os.environ["OIDC_TEST_USERS"]).read_text())
    return people.get(username)
