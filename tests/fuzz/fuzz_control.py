"""Coverage-guided fuzzing of the control protocol parser (control.protocol.decode_request and
every command's validate) with atheris.

Not collected by pytest (not named test_*; tests/fuzz is outside testpaths); the bounded
property-based version runs in the suite: tests/unit/test_fuzz_protocol.py. To fuzz for longer:

    pip install atheris
    PYTHONPATH=src python tests/fuzz/fuzz_control.py -max_total_time=600

Any exception other than RequestError is a finding.
"""

import sys

import atheris

with atheris.instrument_imports():
    from pycluster.control import commands, protocol


def test_one_input(data: bytes) -> None:
    try:
        commands._check(protocol.decode_request(data))
    except protocol.RequestError as exc:
        protocol.error(exc.code, exc.message)  # the reply must be encodable too


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
