"""Eventprop training of recurrent spiking networks."""
