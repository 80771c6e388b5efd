#!/usr/bin/python3
"""torchrun of Debian's python3-torch 1.13, runnable under Python 3.11.

Its Std.from_str iterates an IntFlag, which in Python 3.11 skips the zero
member, so the default `--redirects 0` becomes None and torchrun fails before
starting a worker. This shim replaces that one function and runs torchrun's
own main() unchanged (clinic's distributed test launches its workers with it).
"""
import re
import sys

import torch.distributed.elastic.multiprocessing.api as api


def from_str(cls, vm):
    if re.match(api._VALUE_REGEX, vm):
        return cls(int(vm))
    return {int(i): cls(int(v)) for i, v in (m.split(":") for m in vm.split(","))}


api.Std.from_str = classmethod(from_str)

from torch.distributed.run import main  # noqa: E402

sys.exit(main())
