"""The `pipelined` command: the dispatcher (`main`), offline commands (`offline`: check, graph
FILE), and the commands that ask a running daemon (`remote`, over `client`).
"""
