"""A WebSocket client for torsion-tokio's websocket_echo example, with the `websockets`
package: sends text and binary messages (one of 1 MiB) and checks each echo.

    python websocket_client.py PORT [COUNT]

Prints "ok COUNT" when every echo matched; exits 1 otherwise.
"""

import os
import sys

from websockets.sync.client import connect


def main():
    port = int(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    with connect(f"ws://127.0.0.1:{port}/echo", max_size=4 << 20, open_timeout=10) as ws:
        for i in range(count):
            if i % 2 == 0:
                message = f"message {i}: " + "x" * (i % 50)
            else:
                message = os.urandom(i * 13 % 4096 + 1)
            ws.send(message)
            echoed = ws.recv(timeout=10)
            if echoed != message:
                print(f"message {i} came back different", flush=True)
                sys.exit(1)
        big = os.urandom(1 << 20)
        ws.send(big)
        if ws.recv(timeout=10) != big:
            print("the 1 MiB message came back different", flush=True)
            sys.exit(1)
    print(f"ok {count + 1}", flush=True)


if __name__ == "__main__":
    main()
