"""pytest settings shared by the unit tests and nbval's run of the notebooks."""


def pytest_collectstart(collector):
    # nbval checks every stored output in strict mode, except standard error: progress
    # bars (tqdm) and library warnings go there, and they differ from run to run. What a
    # cell prints on standard output, and what it returns, must match exactly.
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
