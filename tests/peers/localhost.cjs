// Preloaded with `node -r` so that a server that would listen on every interface
// (server-everything does) listens on 127.0.0.1 only, and says where it listens: once
// a TCP server is listening, a line `toolgate-peer: listening on 127.0.0.1:PORT` goes to
// stdout. Tests start it with PORT=0 and read the port from that line, so they reach
// the process they started and no other.
const net = require("node:net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  } else if (first && typeof first === "object" && first.path === undefined) {
    args[0] = { ...first, host: "127.0.0.1" };
  }
  this.once("listening", () => {
    const at = this.address();
    if (at && typeof at === "object") {
      process.stdout.write(`toolgate-peer: listening on ${at.address}:${at.port}\n`);
    }
  });
  return listen.apply(this, args);
};
