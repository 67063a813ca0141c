"""Eventprop training of recurrent spiking networks."""

from edgekws.toolkit.train._eventprop import LossConfig as LossConfig
from edgekws.toolkit.train._eventprop import eventprop_loss_and_grad as eventprop_loss_and_grad
from edgekws.toolkit.train._model import SimOutput as SimOutput
from edgekws.toolkit.train._model import init_params as init_params
from edgekws.toolkit.train._model import simulate as simulate
