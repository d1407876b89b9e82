"""Services: the shared resources the lifespan builds and hands to routes and the socket endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from providers.registry import Registry

from .auth import Auth
from .conversations import Conversations
from .hub import Hub
from .messages import Messages
from .nodes import Nodes
from .routing import Router
from .settings import Settings
from .store import Store
from .turns import Turns


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    session: aiohttp.ClientSession
    registry: Registry
    router: Router
    hub: Hub
    auth: Auth
    conversations: Conversations
    turns: Turns
    messages: Messages
    nodes: Nodes
