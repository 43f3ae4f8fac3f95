"""Twisted poetry peers for torsion's interop tests (crates/torsion-cli/tests/twisted_interop.rs,
examples/tests/twisted_servers.rs),
after Dave Peticolas' tutorial programs (twisted-client-2/get-poetry.py and
twisted-server-1/fastpoetry.py).

    poetry_peers.py clients PORT COUNT BURST EXPECTED_FILE
        Downloads a poem from 127.0.0.1:PORT with COUNT Twisted clients (PoetryProtocol:
        bytes until the server closes), BURST of them started at once, the next BURST once
        those are done. Every poem must equal EXPECTED_FILE byte for byte. Prints
        "OK COUNT" then exits 0, or one FAILED line per wrong download and exits 1.

    poetry_peers.py server POEM_FILE
        Serves POEM_FILE to every client, then closes (fastpoetry.py), on 127.0.0.1 on a
        free port, printed as "PORT n"; prints "CONNECTION" for each client. Runs until
        killed.
"""

import sys

from twisted.internet import defer, protocol, reactor


EXIT = {"code": 1}


def say(*words):
    print(*words, flush=True)


class PoetryProtocol(protocol.Protocol):
    def __init__(self, done):
        self.poem = b""
        self.done = done

    def dataReceived(self, data):
        self.poem += data

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(self.poem)


def get_poetry(port):
    done = defer.Deferred()
    factory = protocol.ClientFactory()
    factory.protocol = lambda: PoetryProtocol(done)
    factory.clientConnectionFailed = lambda _c, reason: done.errback(reason)
    reactor.connectTCP("127.0.0.1", port, factory)
    return done


@defer.inlineCallbacks
def clients(port, count, burst, expected_file):
    with open(expected_file, "rb") as f:
        expected = f.read()
    failed = 0
    started = 0
    try:
        while started < count:
            n = min(burst, count - started)
            results = yield defer.DeferredList(
                [get_poetry(port) for _ in range(n)], consumeErrors=True
            )
            for i, (ok, value) in enumerate(results):
                if not ok:
                    failed += 1
                    say("FAILED", started + i, value.getErrorMessage())
                elif value != expected:
                    failed += 1
                    say("FAILED", started + i, "got %d bytes, expected %d" % (len(value), len(expected)))
            started += n
        if failed == 0:
            say("OK", count)
            EXIT["code"] = 0
    finally:
        reactor.stop()


class FastPoetryProtocol(protocol.Protocol):
    def connectionMade(self):
        say("CONNECTION")
        self.transport.write(self.factory.poem)
        self.transport.loseConnection()


def server(poem_file):
    with open(poem_file, "rb") as f:
        poem = f.read()
    factory = protocol.ServerFactory()
    factory.protocol = FastPoetryProtocol
    factory.poem = poem
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    say("PORT", port.getHost().port)


def main(argv):
    if argv[1:2] == ["clients"] and len(argv) == 6:
        reactor.callWhenRunning(clients, int(argv[2]), int(argv[3]), int(argv[4]), argv[5])
        reactor.callLater(60, lambda: (say("FAILED", "timed out"), reactor.stop()))
    elif argv[1:2] == ["server"] and len(argv) == 3:
        server(argv[2])
        EXIT["code"] = 0
    else:
        sys.exit(__doc__)
    reactor.run()
    sys.exit(EXIT["code"])


if __name__ == "__main__":
    main(sys.argv)
