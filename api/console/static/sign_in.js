// The console's sign-in: our API's SIWE flow through the browser's EIP-1193 wallet.
// The tokens stay on the server's side: /console/session answers with cookies only.
(function () {
  "use strict";
  const button = document.getElementById("sign-in");
  const status = document.getElementById("sign-in-status");
  const csrf = document.querySelector('meta[name="console-csrf"]').content;

  function hex(text) {
    const bytes = new TextEncoder().encode(text);
    return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function problem(response) {
    try {
      const body = await response.json();
      return body.detail || body.title || response.statusText;
    } catch (_) {
      return response.statusText;
    }
  }

  async function signIn() {
    if (!window.ethereum) {
      status.textContent = "No wallet found in this browser.";
      return;
    }
    status.textContent = "Waiting for the wallet…";
    const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
    const address = accounts[0];
    const nonce = await fetch("/v1/auth/nonce", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ address }),
    });
    if (!nonce.ok) {
      status.textContent = "Sign-in refused: " + (await problem(nonce));
      return;
    }
    const { message } = await nonce.json();
    // personal_sign takes the message as hex of its UTF-8 bytes, then the address.
    const signature = await window.ethereum.request({
      method: "personal_sign",
      params: [hex(message), address],
    });
    const session = await fetch("/console/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Console-CSRF": csrf },
      body: JSON.stringify({ message, signature }),
    });
    if (!session.ok) {
      status.textContent = "Sign-in refused: " + (await problem(session));
      return;
    }
    const { next } = await session.json();
    window.location.assign(next);
  }

  button.addEventListener("click", () => {
    signIn().catch((error) => {
      status.textContent = "Sign-in failed: " + (error && error.message ? error.message : error);
    });
  });
})();
