"""charrnn serve's page in headless Chromium: type a prime, press Generate, the page's own script streams the text.

The browser is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages ended by
a NUL byte on file descriptors 3 and 4), with input events a person would make: a click in the prime box,
typed text, a click on the button. The test reads the page, never calls its script.
"""

import json
import os
import select
import signal
import subprocess
import time

import pytest
from serve_server import Server, post, save_tiny_model
from test_page_render import CHROMIUM_FLAGS, find_chromium

TIMEOUT = 60


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, chromium, profile, url):
        to_browser, self._commands = os.pipe()
        self._events, from_browser = os.pipe()

        def descriptors():  # the pipe ends Chromium expects on 3 and 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        flags = [flag for flag in CHROMIUM_FLAGS if not flag.startswith("--virtual-time-budget")]
        self.process = subprocess.Popen(
            [chromium, *flags, f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1000,800", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=descriptors,
            pass_fds=(3, 4),
            start_new_session=True,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._next_id, self._buffer = 0, b""
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(target for target in targets if target["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method, session=None, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            if not select.select([self._events], [], [], max(0.0, deadline - time.monotonic()))[0]:
                pytest.fail(f"Chromium did not answer {method} within {TIMEOUT} s")
            chunk = os.read(self._events, 1 << 16)
            if not chunk:
                pytest.fail("Chromium closed its DevTools pipe")
            self._buffer += chunk

    def page(self, method, **params):
        return self.call(method, self.session, **params)

    def read(self, expression):
        """The value of a read-only expression on the page (its text, an attribute, a box's place)."""
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def click(self, element_id):
        box = self.read(
            f"(() => {{ const r = document.getElementById({json.dumps(element_id)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def close(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        os.close(self._commands)
        os.close(self._events)


def wait_for(browser, expression, seconds=TIMEOUT):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = browser.read(expression)
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"the page never satisfied {expression}")


def test_type_a_prime_press_generate_and_the_text_streams_in(tmp_path):
    chromium = find_chromium()
    server = Server(save_tiny_model(tmp_path))
    browser = None
    try:
        url = f"http://127.0.0.1:{server.port}/?length=400&seed=5&temperature=0.8"
        browser = Browser(chromium, tmp_path / "profile", url)
        wait_for(browser, "document.readyState === 'complete' && document.getElementById('model').textContent")
        assert browser.read("document.getElementById('model').textContent").startswith("lstm 2x16, ")
        browser.click("prime")
        browser.page("Input.insertText", text="the d")
        browser.click("generate")
        status = wait_for(
            browser,
            "document.getElementById('status').dataset.state !== 'idle' && "
            "document.getElementById('status').dataset.state !== 'running' && "
            "document.getElementById('status').textContent",
        )
        assert status == "done: 405 characters, seed 5"
        shown = browser.read("document.getElementById('output').textContent")
        assert shown.startswith("the d") and len(shown) == 405
        assert int(browser.read("document.getElementById('output').dataset.events")) >= 1
        status, answer = post(server.port, {"prime": "the d", "length": 400, "seed": 5, "temperature": 0.8})
        assert status == 200 and answer["samples"] == [shown]
    finally:
        if browser is not None:
            browser.close()
        code, _, err = server.stop()
    assert code == 0, err
