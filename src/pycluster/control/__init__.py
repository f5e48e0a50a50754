"""The control socket: newline-delimited JSON over a unix stream socket."""
