"""The Accelerate training engine. At this level: the experiment schema (`config.py`), config ->
a run's parts (`build.py`), the loop (`engine.py`) and the stop request (`stop.py`); the loop's
parts are in `components/`, the run's bookkeeping in `bookkeeping/`."""
