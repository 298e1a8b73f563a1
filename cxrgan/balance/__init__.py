"""Balancers: ``fit_resample(train_split) -> train_split``, classic and generator-backed, behind one registry."""

from cxrgan.balance.base import BALANCERS, BalanceContext, Balancer, make_balancer, register_balancer

__all__ = ["BALANCERS", "BalanceContext", "Balancer", "make_balancer", "register_balancer"]
