"""The lab: data, networks, training and evaluation of one experiment."""
