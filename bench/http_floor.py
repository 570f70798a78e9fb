"""Floors for bench/http_profile.py: the least a uvloop + httptools server can do per request.

    python bench/http_floor.py PORT direct   # answer from on_message_complete: no ASGI at all
    python bench/http_floor.py PORT task     # a task per request running a trivial ASGI app

Not servers: no bounds, no timers, no error handling. They show how much of asgiws' cost per
request is the loop, the parser and the task an ASGI app runs in, and how much is asgiws'.
"""

import asyncio
import sys

import httptools
import uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nHello, world!"
START = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"Hello, world!"}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}
tasks: set = set()


async def app(scope, receive, send):
    await receive()
    await send(START)
    await send(BODY)


class Floor(asyncio.Protocol):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.parser = httptools.HttpRequestParser(self)
        self.headers: list = []
        self.url = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append((name.lower(), value))

    def on_message_complete(self):
        if self.mode == "direct":
            self.transport.write(RESPONSE)
            return
        scope = {"type": "http", "path": self.url.decode(), "headers": self.headers}
        self.headers = []
        task = asyncio.get_running_loop().create_task(app(scope, self.receive, self.send))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def receive(self):
        return REQUEST

    async def send(self, message):
        if message["type"] == "http.response.body":
            self.transport.write(RESPONSE)


async def main(port: int, mode: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Floor(mode), "127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
