"""Real Starlette and FastAPI WebSocket apps served by asgiws, driven by real clients."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from fastapi import FastAPI, WebSocket as FastAPIWebSocket, WebSocketDisconnect, status
from fastapi.exceptions import WebSocketException
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

TIMEOUT = 10.0
disconnects = []


async def starlette_echo(websocket: WebSocket):
    await websocket.accept(subprotocol="echo" if "echo" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            text = await websocket.receive_text()
            if text == "close please":
                await websocket.close(code=4000, reason="as you wish")
                return
            await websocket.send_text(text)
    except WebSocketDisconnect as exc:
        disconnects.append((exc.code, exc.reason))


async def starlette_deny(websocket: WebSocket):
    await websocket.send_denial_response(PlainTextResponse("members only", status_code=401))


async def homepage(request):
    return PlainTextResponse("home")


starlette_app = Starlette(routes=[
    Route("/", homepage),
    WebSocketRoute("/ws", starlette_echo),
    WebSocketRoute("/deny", starlette_deny),
])


fastapi_app = FastAPI()


@fastapi_app.websocket("/ws/{room}")
async def fastapi_room(websocket: FastAPIWebSocket, room: str, token: str = ""):
    if token != "secret":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="bad token")
    await websocket.accept()
    async for message in websocket.iter_json():
        await websocket.send_json({"room": room, "echo": message})


@fastapi_app.get("/")
async def fastapi_home():
    return {"ok": True}


def test_starlette_echo_with_subprotocol(run_server):
    with run_server(starlette_app) as server:
        with connect(server.ws_url + "/ws", subprotocols=["echo"], open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol == "echo"
            for text in ["hello", "é" * 10_000]:
                ws.send(text)
                assert ws.recv(TIMEOUT) == text


def test_starlette_close_with_reason(run_server):
    with run_server(starlette_app) as server:
        with connect(server.ws_url + "/ws", open_timeout=TIMEOUT) as ws:
            ws.send("close please")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(TIMEOUT)
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "as you wish")


def test_starlette_sees_client_close_code_and_reason(run_server):
    disconnects.clear()
    with run_server(starlette_app) as server:
        with connect(server.ws_url + "/ws", open_timeout=TIMEOUT) as ws:
            ws.send("x")
            ws.recv(TIMEOUT)
            ws.close(4100, "leaving")
        # Leaving run_server waits for the app to finish.
    assert disconnects == [(4100, "leaving")]


def test_starlette_denial_response(run_server):
    with run_server(starlette_app) as server:
        with pytest.raises(InvalidStatus) as info:
            connect(server.ws_url + "/deny", open_timeout=TIMEOUT)
        assert info.value.response.status_code == 401
        assert info.value.response.body == b"members only"


def test_fastapi_ws_json(run_server):
    async def client(url):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.ws_connect(url + "/ws/lobby?token=secret") as ws:
                await ws.send_json({"n": 1})
                assert await ws.receive_json(timeout=TIMEOUT) == {"room": "lobby", "echo": {"n": 1}}
            async with session.get(url.replace("ws", "http", 1) + "/") as response:
                assert await response.json() == {"ok": True}

    with run_server(fastapi_app) as server:
        asyncio.run(client(server.ws_url))


def test_fastapi_websocket_exception_before_accept_is_403(run_server):
    with run_server(fastapi_app) as server:
        with pytest.raises(InvalidStatus) as info:
            connect(server.ws_url + "/ws/lobby?token=wrong", open_timeout=TIMEOUT)
        assert info.value.response.status_code == 403
