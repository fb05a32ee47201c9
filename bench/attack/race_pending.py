# ruff: noqa: B023  (each thread is joined in the iteration that made it)
"""Withdrawals (webhook, operator erase) racing the first confirmation of a pending signup."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import ADMIN, WEB, hook, http, links, mails_to, signup, status_of  # noqa: E402

RUN = str(int(time.time()))
lost = 0
for i in range(12):
    a = f"prace-{RUN}-{i}@example.org"
    signup(a, ip="192.0.2.50")
    deadline = time.time() + 20
    while not mails_to(a) and time.time() < deadline:
        time.sleep(0.3)
    link = [u for u in links(mails_to(a)[0]) if "/confirm/" in u][0]
    res: dict[str, int] = {}
    if i % 2:
        w = threading.Thread(
            target=lambda: res.__setitem__(
                "w", hook({"type": "unsubscribe", "list": "1", "contact[email]": a}).status_code
            )
        )
    else:
        w = threading.Thread(
            target=lambda: res.__setitem__(
                "w", http.delete(WEB + "/v1/contacts", params={"email": a}, headers=ADMIN).status_code
            )
        )
    c = threading.Thread(target=lambda: res.__setitem__("c", http.post(link).status_code))
    for t in (c, w):
        t.start()
    for t in (c, w):
        t.join()
    st = status_of(a)
    print(i, res, [s[1] for s in st])
    if any(s[1] == "confirmed" for s in st) and 200 <= res["w"] < 300:
        lost += 1
print("lost", lost)
