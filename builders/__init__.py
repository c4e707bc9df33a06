"""Dataset recipes: scripted behaviour policies and the datasets built from them, one module
per data source. `collect.py` runs them and writes the datasets with Minari's writer."""

from builders import pendulum, pusher

LOCAL_DATASETS = {**pusher.RECIPES, **pendulum.RECIPES}
