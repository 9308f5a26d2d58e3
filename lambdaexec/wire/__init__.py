"""What travels between client and worker: storage keys, events and packing (protocol), the
pickling of functions, arguments and results (serialize), and the user's code shipped by value.

The worker and the client both import this layer; it imports only ``lambdaexec.errors``.
"""
