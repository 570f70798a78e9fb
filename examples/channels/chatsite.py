"""A Django Channels app in one file, served by asgiws:

    asgiws chatsite:application --app-dir examples/channels

A real project keeps this in settings.py, asgi.py, routing.py and consumers.py; docs/django-channels.md
shows that layout. HTTP goes to Django (GET / answers "hello from Django"); a WebSocket to
/ws/room/<name>/ joins that room's group (a name of letters and digits; others are refused), and
a message sent on it goes to every member.
"""

import os

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example"),
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["channels"],
        # One process only. With --workers or several instances, use channels_redis's
        # RedisChannelLayer, so that a group spans every process (docs/django-channels.md).
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    )
    django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402 (after setup)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def index(request):
    return HttpResponse("hello from Django\n", content_type="text/plain")


urlpatterns = [path("", index)]


class RoomConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        name = self.scope["url_route"]["kwargs"]["name"]
        if not name.isalnum():
            # close() before accept() refuses the handshake: asgiws answers HTTP 403.
            self.group = None
            await self.close()
            return
        self.group = "room-" + name
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content):
        await self.channel_layer.group_send(self.group, {"type": "room.message", "text": content.get("text", "")})

    async def room_message(self, event):
        await self.send_json({"text": event["text"]})


application = ProtocolTypeRouter({
    "http": get_asgi_application(),
    "websocket": URLRouter([path("ws/room/<str:name>/", RoomConsumer.as_asgi())]),
})
