"""The built-in pruning methods, one module each: its settings, its pruning function and one
:class:`lottery.pruning.base.Strategy` entry named ``STRATEGY`` (two for ``magnitude``'s
sibling ``oneshot``, which has its own module). :mod:`lottery.pruning.strategies` lists
them in its registry."""
