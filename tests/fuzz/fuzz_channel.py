"""Coverage-guided fuzzing of the IPC frame decoder (pycluster.ipc.channel.FrameDecoder) with atheris.

Not collected by pytest (not named test_*; tests/fuzz is outside testpaths); the bounded
property-based version runs in the suite: tests/unit/test_fuzz_protocol.py. To fuzz for longer:

    pip install atheris
    PYTHONPATH=src python tests/fuzz/fuzz_channel.py -max_total_time=600

Any exception other than ProtocolError, or a frame with an impossible kind/nfds, is a finding.
"""

import sys

import atheris

with atheris.instrument_imports():
    from pycluster.errors import ProtocolError
    from pycluster.ipc.channel import KIND_INTERNAL, KIND_USER, MAX_FDS, FrameDecoder


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    decoder = FrameDecoder(fdp.PickValueInList([16, 4096, 1 << 20]))
    try:
        while fdp.remaining_bytes():
            for kind, _obj, nfds in decoder.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))):
                assert kind in (KIND_USER, KIND_INTERNAL) and 0 <= nfds <= MAX_FDS
    except ProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
