"""A Twisted DatagramProtocol peer for torsion's interop tests (crates/torsion/tests/twisted_interop.rs).

    udp_peer.py send PORT COUNT
        Sends COUNT datagrams to 127.0.0.1:PORT, one at a time (the next once the last came
        back; resent after 0.2 s if it did not), datagram i being (i * 37) % 1400 + 1
        bytes, byte k of it (i + k) % 256. Each must come back exactly. Prints "OK COUNT",
        or "FAILED ..." and exits 1.
"""

import sys

from twisted.internet import protocol, reactor

EXIT = {"code": 1}


def say(*words):
    print(*words, flush=True)


def datagram(i):
    return bytes((i + k) % 256 for k in range((i * 37) % 1400 + 1))


class Sender(protocol.DatagramProtocol):
    def __init__(self, port, count):
        self.target = ("127.0.0.1", port)
        self.count = count
        self.i = 0
        self.retry = None

    def startProtocol(self):
        self.send()

    def send(self):
        self.transport.write(datagram(self.i), self.target)
        self.retry = reactor.callLater(0.2, self.send)

    def datagramReceived(self, data, addr):
        if data != datagram(self.i):
            # A late copy of a resent datagram: the one before this one.
            if self.i > 0 and data == datagram(self.i - 1):
                return
            say("FAILED", "datagram %d came back as %d different bytes" % (self.i, len(data)))
            reactor.stop()
            return
        self.retry.cancel()
        self.i += 1
        if self.i == self.count:
            say("OK", self.count)
            EXIT["code"] = 0
            reactor.stop()
        else:
            self.send()


def main(argv):
    if argv[1:2] == ["send"] and len(argv) == 4:
        reactor.listenUDP(0, Sender(int(argv[2]), int(argv[3])), interface="127.0.0.1")
    else:
        sys.exit(__doc__)
    reactor.callLater(30, lambda: (say("FAILED", "timed out"), reactor.stop()))
    reactor.run()
    sys.exit(EXIT["code"])


if __name__ == "__main__":
    main(sys.argv)
