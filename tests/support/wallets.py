"""Real wallets for tests: keys made with eth-account, SIWE messages signed for real."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient


def new_wallet() -> LocalAccount:
    return Account.create()


def sign(wallet: LocalAccount, message: str) -> str:
    signature = wallet.sign_message(encode_defunct(text=message)).signature.hex()
    return signature if signature.startswith("0x") else "0x" + signature


@dataclass
class SignedIn:
    wallet: LocalAccount
    user_id: str
    access_token: str
    refresh_token: str
    position: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def request_nonce(client: TestClient, wallet: LocalAccount) -> dict[str, Any]:
    response = client.post("/v1/auth/nonce", json={"address": wallet.address})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def sign_in(client: TestClient, wallet: LocalAccount | None = None) -> SignedIn:
    wallet = wallet or new_wallet()
    message = request_nonce(client, wallet)["message"]
    response = client.post(
        "/v1/auth/verify", json={"message": message, "signature": sign(wallet, message)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return SignedIn(
        wallet, body["user"]["id"], body["access_token"], body["refresh_token"], body["position"]
    )
