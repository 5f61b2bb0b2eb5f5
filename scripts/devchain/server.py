"""JSON-RPC 2.0 over HTTP on loopback, in front of the devchain's node.

A small standard-library server: one POST per call (or a batch), answered in a background
thread, as a public node's HTTP endpoint answers."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scripts.devchain.node import Node, RpcFault

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024


def answer(node: Node, request: Any) -> dict[str, Any]:
    """The JSON-RPC response object for one request object."""
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        return _error(None, -32600, "invalid request")
    request_id = request.get("id")
    try:
        result = node.handle(request["method"], request.get("params"))
    except RpcFault as fault:
        return _error(request_id, fault.code, fault.message)
    except Exception as error:  # the answer to a bad call, never a dead server
        log.exception("devchain: %s failed", request["method"])
        return _error(request_id, -32603, f"internal error: {type(error).__name__}: {error}")
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class RpcServer:
    def __init__(self, node: Node, host: str, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                declared = self.headers.get("Content-Length") or "0"
                if not declared.isdigit():  # a negative length would block the read
                    self._send(400, _error(None, -32600, "a Content-Length in bytes is needed"))
                    return
                length = int(declared)
                if length > MAX_BODY_BYTES:
                    self._send(413, _error(None, -32600, "request too large"))
                    return
                try:
                    request = json.loads(self.rfile.read(length))
                except ValueError:
                    self._send(200, _error(None, -32700, "parse error"))
                    return
                if isinstance(request, list):
                    replies: Any = [answer(node, item) for item in request]
                    if not request:
                        replies = _error(None, -32600, "empty batch")
                else:
                    replies = answer(node, request)
                self._send(200, replies)

            def do_GET(self) -> None:
                self._send(405, _error(None, -32600, "JSON-RPC takes POST"))

            def _send(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("devchain rpc: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="devchain-rpc", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
