"""metalite.runtime.webui: the device's own web page (``metalite device serve``), standard library only.

    from metalite.runtime.sync import DeviceHome
    from metalite.runtime.webui import PageServer, Teacher, Watcher
    teacher = Teacher(DeviceHome("/var/lib/metalite"))
    server = PageServer(("127.0.0.1", 8080), teacher)    # token / CSRF rules: access.py
    Watcher(teacher, "/home/pi/shots", open("shots.jsonl", "a")).start()
    server.serve_forever()

Teach classes from a phone's camera or files, recognize, correct (to the outbox), rename and remove;
docs/device_page.md has the page, the security model and how to use the camera from a phone.
"""

from .access import Access, is_loopback
from .server import MAX_BODY, PageServer, lan_address
from .teacher import Teacher
from .tls import WebError, self_signed, tls_context
from .watch import Watcher

__all__ = [
    "Access",
    "is_loopback",
    "MAX_BODY",
    "PageServer",
    "lan_address",
    "WebError",
    "self_signed",
    "tls_context",
    "Teacher",
    "Watcher",
]
