"""The shop's backend: catalog, cart, orders and an event stream. Depends on auth.

    GET    /health                      -> {"status": "ok"}
    GET    /items, /items/<id>          public catalog
    GET    /cart                        bearer token
    POST   /cart/items {"item_id", "quantity"}
    DELETE /cart/items/<id>
    POST   /orders                      place an order from the cart (201)
    GET    /orders, /orders/<id>
    POST   /orders/<id>/cancel
    GET    /events?since=N&wait=S&limit=N   Server-Sent Events of the user's orders;
                                         needs a token whose audience includes "backend"

Every bearer token is checked by calling the auth service's GET /verify at LOOP_AUTH_URL
(set by `loop run` because this service depends on auth). State lives in memory.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jsonhttp import JsonHandler, parse_address, serve

STREAM_AUDIENCE = "backend"
MAX_WAIT_S = 5.0
ITEMS: list[dict[str, Any]] = [
    {"id": "sku-coffee", "name": "Coffee beans, 1 kg", "price_cents": 1800},
    {"id": "sku-mug", "name": "Enamel mug", "price_cents": 1200},
    {"id": "sku-filter", "name": "Paper filters, 100", "price_cents": 450},
    {"id": "sku-grinder", "name": "Hand grinder", "price_cents": 5900},
]
CATALOG: dict[str, dict[str, Any]] = {str(item["id"]): item for item in ITEMS}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Shop:
    """Carts, orders and per-user events, in memory, safe across request threads."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.carts: dict[str, dict[str, int]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []

    def cart(self, user: str) -> dict[str, Any]:
        with self.changed:
            lines = [
                {"item_id": i, "quantity": q, "price_cents": CATALOG[i]["price_cents"]}
                for i, q in self.carts.get(user, {}).items()
            ]
        total = sum(line["quantity"] * line["price_cents"] for line in lines)
        return {"items": lines, "total_cents": total}

    def add_to_cart(self, user: str, item_id: Any, quantity: Any) -> dict[str, Any]:
        if not isinstance(item_id, str) or item_id not in CATALOG:
            raise HttpError(404, f"no item {item_id!r}")
        if type(quantity) is not int or not 1 <= quantity <= 10:
            raise HttpError(400, "'quantity' must be a whole number from 1 to 10")
        with self.changed:
            cart = self.carts.setdefault(user, {})
            cart[item_id] = min(cart.get(item_id, 0) + quantity, 10)
        return self.cart(user)

    def remove_from_cart(self, user: str, item_id: str) -> dict[str, Any]:
        with self.changed:
            if self.carts.get(user, {}).pop(item_id, None) is None:
                raise HttpError(404, f"{item_id!r} is not in the cart")
        return self.cart(user)

    def place_order(self, user: str) -> dict[str, Any]:
        cart = self.cart(user)
        if not cart["items"]:
            raise HttpError(409, "cart is empty")
        with self.changed:
            order = {
                "id": f"ord-{len(self.orders) + 1:06d}",
                "user": user,
                "status": "placed",
                "items": cart["items"],
                "total_cents": cart["total_cents"],
            }
            self.orders[order["id"]] = order
            self.carts.pop(user, None)
            self._emit(user, "order_placed", order)
        return order

    def order(self, user: str, order_id: str) -> dict[str, Any]:
        order = self.orders.get(order_id)
        if order is None or order["user"] != user:  # another user's order does not exist
            raise HttpError(404, f"no order {order_id!r}")
        return order

    def user_orders(self, user: str) -> list[dict[str, Any]]:
        with self.changed:
            return [o for o in self.orders.values() if o["user"] == user]

    def cancel_order(self, user: str, order_id: str) -> dict[str, Any]:
        with self.changed:
            order = self.order(user, order_id)
            if order["status"] != "placed":
                raise HttpError(409, f"order {order_id} is already {order['status']}")
            order["status"] = "cancelled"
            self._emit(user, "order_cancelled", order)
        return order

    def _emit(self, user: str, kind: str, order: dict[str, Any]) -> None:
        # caller holds self.changed
        event = {"id": len(self.events) + 1, "user": user, "type": kind, "order": dict(order)}
        self.events.append(event)
        self.changed.notify_all()

    def wait_events(self, user: str, since: int, deadline: float) -> list[dict[str, Any]]:
        """The user's events after id `since`, waiting until `deadline` for at least one."""
        with self.changed:
            while True:
                found = [e for e in self.events[since:] if e["user"] == user]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self.changed.wait(left)


class AuthClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The token's claims from auth's /verify; raise HttpError 401 (or 503)."""
        if not authorization:
            raise HttpError(401, "missing bearer token")
        request = urllib.request.Request(
            f"{self.base_url}/verify", headers={"Authorization": authorization}
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as resp:
                claims: dict[str, Any] = json.load(resp)
                return claims
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise HttpError(401, json.load(exc).get("error", "invalid token")) from None
            raise HttpError(503, f"auth service answered HTTP {exc.code}") from None
        except OSError as exc:
            raise HttpError(503, f"auth service unreachable: {exc}") from None


class Handler(JsonHandler):
    server_version = "shop-backend/1.0"
    shop: Shop  # set in main()
    auth: AuthClient
    _body = b""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if method == "GET" and path == "/health":
                self._send(200, {"status": "ok", "service": "backend"})
            elif method == "GET" and path == "/items":
                self._send(200, {"items": list(CATALOG.values())})
            elif method == "GET" and (m := re.fullmatch(r"/items/([^/]+)", path)):
                if m[1] not in CATALOG:
                    raise HttpError(404, f"no item {m[1]!r}")
                self._send(200, CATALOG[m[1]])
            elif method == "GET" and path == "/events":
                self._stream_events(parse_qs(url.query))
            elif re.fullmatch(r"/(cart|orders)(/.*)?", path):
                self._dispatch_user(method, path)
            else:
                raise HttpError(404, f"no route {method} {path}")
        except HttpError as exc:
            if exc.status in (401, 403):  # a refusal the caller may not understand: said here
                print(f"backend: WARNING {method} {url.path} refused ({exc.status}): {exc}",
                      file=sys.stderr, flush=True)
            self._send(exc.status, {"error": str(exc)})
        except Exception as exc:  # a bug here: answer 500, log it, keep serving
            self.log_error("%s %s failed: %r", method, self.path, exc)
            self._send(500, {"error": "internal error"})

    def _dispatch_user(self, method: str, path: str) -> None:
        """Routes that need a valid bearer token: /cart..., /orders..."""
        user: str = self.auth.verify(self.headers.get("Authorization"))["sub"]
        shop = self.shop
        if (method, path) == ("GET", "/cart"):
            self._send(200, shop.cart(user))
        elif (method, path) == ("POST", "/cart/items"):
            body = self._json_body()
            self._send(200, shop.add_to_cart(user, body.get("item_id"), body.get("quantity")))
        elif method == "DELETE" and (m := re.fullmatch(r"/cart/items/([^/]+)", path)):
            self._send(200, shop.remove_from_cart(user, m[1]))
        elif (method, path) == ("POST", "/orders"):
            self._send(201, shop.place_order(user))
        elif (method, path) == ("GET", "/orders"):
            self._send(200, {"orders": shop.user_orders(user)})
        elif method == "GET" and (m := re.fullmatch(r"/orders/([^/]+)", path)):
            self._send(200, shop.order(user, m[1]))
        elif method == "POST" and (m := re.fullmatch(r"/orders/([^/]+)/cancel", path)):
            self._send(200, shop.cancel_order(user, m[1]))
        else:
            raise HttpError(404, f"no route {method} {path}")

    def _stream_events(self, query: dict[str, list[str]]) -> None:
        claims = self.auth.verify(self.headers.get("Authorization"))
        audiences = claims.get("aud") or []
        if STREAM_AUDIENCE not in audiences:
            raise HttpError(403, f"token audience {audiences} does not include {STREAM_AUDIENCE!r}")
        try:
            since = int(query.get("since", ["0"])[0])
            wait = min(float(query.get("wait", ["0"])[0]), MAX_WAIT_S)
            limit = int(query.get("limit", ["0"])[0])  # 0 = no limit
        except ValueError:
            raise HttpError(400, "since, wait and limit must be numbers") from None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")  # no length: the stream ends when we close
        self.end_headers()
        self.close_connection = True
        user = claims["sub"]
        self._event("hello", {"user": user})
        deadline = time.monotonic() + wait
        sent = 0
        while not limit or sent < limit:
            events = self.shop.wait_events(user, since, deadline)
            if not events:
                break
            for event in events[: limit - sent if limit else None]:
                self._event(event["type"], event["order"], event_id=event["id"])
                since, sent = event["id"], sent + 1
        self._event("end", {"sent": sent})

    def _event(self, kind: str, data: dict[str, Any], event_id: int | None = None) -> None:
        head = f"id: {event_id}\n" if event_id is not None else ""
        self.wfile.write(f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self._body or b"{}")
        except ValueError:
            raise HttpError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return body


def main() -> None:
    args = parse_address(__doc__.splitlines()[0])

    auth_url = os.environ.get("LOOP_AUTH_URL")
    if not auth_url:
        sys.exit("backend: LOOP_AUTH_URL is not set (run under `loop run`, or set it yourself)")
    Handler.shop = Shop()
    Handler.auth = AuthClient(auth_url)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(
        f"backend: listening on http://{args.host}:{server.server_port} (auth at {auth_url})",
        flush=True,
    )
    serve(server)


if __name__ == "__main__":
    main()
