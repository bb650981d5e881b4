"""A user's own model, as a module outside prismlab: tests write it to a folder on PYTHONPATH and
name it `model.name=own_models:make`."""

SOURCE = '''
import torch
from torch import nn

def make(num_outputs, in_channels, image_size, width=8):
    """A user's model: the documented keyword arguments, plus its own (`width`, from model.kwargs)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(width, num_outputs),
    )
'''
