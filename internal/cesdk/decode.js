// decode.js reads HTTP requests as JSON lines on stdin ({"headers": {...},
// "body": "..."}) and decodes each with the CloudEvents JavaScript SDK's
// HTTP.toEvent, as a function built on the SDK would. It writes one JSON
// line per request, in order: {"event": {...}} or {"error": "..."}.
"use strict";
const { HTTP } = require("cloudevents");

function attrs(ev) {
  let data = ev.data;
  if (data !== undefined && ArrayBuffer.isView(data)) {
    data = Buffer.from(data.buffer).toString("base64");
  }
  return {
    specversion: ev.specversion,
    id: ev.id,
    type: ev.type,
    source: ev.source,
    subject: ev.subject,
    time: ev.time,
    datacontenttype: ev.datacontenttype,
    data: data === undefined ? null : data,
  };
}

function decode(line) {
  const req = JSON.parse(line);
  try {
    const ev = HTTP.toEvent({ headers: req.headers, body: req.body });
    if (Array.isArray(ev)) {
      return { error: `a batch of ${ev.length} events, not one event` };
    }
    return { event: attrs(ev) };
  } catch (err) {
    return { error: String((err && err.message) || err) };
  }
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const out = input
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.stringify(decode(l)) + "\n");
  process.stdout.write(out.join(""));
});
