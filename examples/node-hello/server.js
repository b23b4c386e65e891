// A minimal web app for fence: node's http module only, listening on $PORT.
"use strict";

const http = require("http");

const port = Number(process.env.PORT || 8080);
const instance = process.env.INSTANCE_INDEX;

const server = http.createServer((req, res) => {
  const body = "Hello from fence" + (instance ? ` (instance ${instance})` : "") + "\n";
  res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
});

// fence stops an instance with TERM: close the listener and leave with status 0.
process.on("SIGTERM", () => server.close(() => process.exit(0)));

server.listen(port, "0.0.0.0", () => console.log(`node-hello listening on port ${port}`));
