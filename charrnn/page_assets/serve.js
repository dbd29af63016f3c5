// charrnn serve's page: POST /v1/generate with "stream": true and show the text as its events arrive.
// Server-sent events come over a POST, which EventSource cannot send, so the body is read with fetch's
// stream reader and split into events here. Generated text is only ever added as text nodes.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("controls"), output = $("output"), status = $("status");
  const generateButton = $("generate"), stopButton = $("stop");
  let controller = null;

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  async function describe() {
    try {
      const [model, health] = await Promise.all([
        fetch("v1/model").then((r) => r.json()),
        fetch("healthz").then((r) => r.json()),
      ]);
      $("model").textContent =
        `${model.cell} ${model.layers}x${model.hidden}, ${model.vocab_size} symbols, ` +
        `up to ${health.max_length} characters`;
      $("length").max = health.max_length;
    } catch (error) {
      $("model").textContent = "(could not describe the model)";
    }
  }

  function requestBody() {
    const body = {
      prime: $("prime").value,
      temperature: Number($("temperature").value),
      length: Number($("length").value),
      stream: true,
    };
    if ($("seed").value !== "") body.seed = Number($("seed").value);
    return body;
  }

  // Events are blocks of "field: value" lines ended by a blank line; our data lines hold one JSON object.
  function takeEvents(buffer, handle) {
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5);
      }
      if (data) handle(name, JSON.parse(data));
    }
    return buffer;
  }

  async function generate(event) {
    event.preventDefault();
    controller = new AbortController();
    output.textContent = "";
    output.dataset.events = "0";
    setStatus("generating\u2026", "running");
    generateButton.disabled = true;
    stopButton.disabled = false;
    try {
      const response = await fetch("v1/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(requestBody()),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error((await response.json()).error);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "", seed = null, finished = false;
      while (!finished) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the server closed the stream before the text was finished");
        buffer = takeEvents(buffer + value, (name, data) => {
          if (name === "start") {
            seed = data.seed;
            setStatus(`generating with seed ${seed}\u2026`, "running");
          } else if (name === "message" && data.sample === 0) {
            output.append(document.createTextNode(data.text));
            output.dataset.events = String(Number(output.dataset.events) + 1);
          } else if (name === "done") {
            finished = true;
            setStatus(`done: ${data.characters[0]} characters, seed ${seed}`, "done");
          } else if (name === "error") {
            throw new Error(data.error);
          }
        });
      }
    } catch (error) {
      if (error.name === "AbortError") setStatus("stopped", "stopped");
      else setStatus(`error: ${error.message}`, "error");
    } finally {
      generateButton.disabled = false;
      stopButton.disabled = true;
      controller = null;
    }
  }

  // The address can fill the controls in, so a setting can be shared as a link:
  // /?prime=ROMEO:&temperature=0.7&length=300&seed=5 (nothing runs until Generate is pressed).
  const query = new URLSearchParams(window.location.search);
  for (const name of ["prime", "temperature", "length", "seed"]) {
    if (query.has(name)) $(name).value = query.get(name);
  }
  form.addEventListener("submit", generate);
  stopButton.addEventListener("click", () => controller && controller.abort());
  describe();
})();
