"""Reference HTTP server for bench/run_http.sh: twisted.web on the epoll reactor.

Usage: python twisted_web_hello.py PORT   (listens on 127.0.0.1:PORT)

A Site over one leaf Resource answering `hello world` (text/plain; twisted.web
adds the Content-Length) to GET on any path. The access log is off (Site's
default logPath=None, and no log observer is started), as it is for the
torsion-web and hyper servers. The listen backlog is 1024, as in the other
servers.
"""

import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.web import resource, server  # noqa: E402


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"hello world"


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: twisted_web_hello.py PORT\n")
        sys.exit(2)
    port = int(sys.argv[1])
    reactor.listenTCP(port, server.Site(Hello()), backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
