"""A bare ASGI app that writes a request body to a file and fsyncs it: the upload benchmark's ceiling.

Served by the same uvicorn settings as `manage.py serve`, it shows what the server alone
costs, with no Django, no authentication and no database in the way.
"""

import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    fd = os.open(os.environ["SINK_FILE"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        more = True
        while more:
            message = await receive()
            os.write(fd, message.get("body", b""))
            more = message.get("more_body", False)
        os.fsync(fd)
    finally:
        os.close(fd)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})
