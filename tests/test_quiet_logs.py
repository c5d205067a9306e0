"""The book's cells show results, not torch's "No CUDA runtime is found" log line (lorsp.quiet_logs)."""
import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch logs the notice only on a machine without CUDA")
def test_importing_torchvision_after_lorsp_logs_no_cuda_notice():
    code = "import lorsp, torchvision.transforms.v2, torch.utils.cpp_extension as ext; ext._find_cuda_home()"
    env = {**os.environ, "CUDA_HOME": sys.prefix}  # an existing folder, as on our CI, where the notice appears
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "No CUDA runtime is found" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch logs the notice only on a machine without CUDA")
def test_other_records_of_that_logger_still_pass():
    import logging

    import lorsp  # noqa: F401 - attaches the filter

    logger = logging.getLogger("torch.utils.cpp_extension")
    keep = logging.LogRecord(logger.name, logging.WARNING, __file__, 1, "something else", None, None)
    drop = logging.LogRecord(logger.name, logging.WARNING, __file__, 1, "No CUDA runtime is found, using %s",
                             ("x",), None)
    assert logger.filter(keep) and not logger.filter(drop)
