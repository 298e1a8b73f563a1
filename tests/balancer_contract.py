"""The contract every balancer must pass: the checks live in ``cxrgan.testing`` (public, for third-party balancers
too); this module names the built-in methods the tests run them on.

Use from any test module (pytest puts ``tests/`` on the import path):

    from balancer_contract import check_balancer_contract, check_rejects_single_class
    check_balancer_contract(
        make_balancer("dcgan", BalanceContext(0)), train, reseeded=make_balancer("dcgan", BalanceContext(1))
    )

``expect`` says what the output must be: "balanced" (every label-powerset class has the same count; for a binary
task, as many negatives as positives), "weights" (rows unchanged, ``class_weights`` set), "identity" (rows
unchanged) or "any" (only the generic checks); ``EXPECTED_OUTCOME`` says it for the built-in methods.

tests/test_balance_classic.py runs it on the ``CLASSIC_BALANCERS`` and ``LONG_TAIL_METHODS``; GAN-backed balancers
run it with tiny generator settings in their own test modules (tests/test_balance_gan.py).
"""

from __future__ import annotations

from cxrgan.testing import (EXPECTED_OUTCOME, assert_same_rows, check_balancer, check_balancer_contract,  # noqa: F401
                            check_rejects_single_class, row_keys)

CLASSIC_BALANCERS = ("none", "undersample", "oversample", "smote", "augment", "class-weights", "repeat")
# the long-tail methods of cxrgan.balance.multilabel_resample and cxrgan.balance.longtail
LONG_TAIL_METHODS = ("lp-ros", "lp-rus", "ml-ros", "ml-rus", "mlsmote", "focal", "ldam-drw", "logit-adjust",
                     "logit-adjust-posthoc", "crt")
# methods whose synthetic rows may carry a label vector no input row has (MLSMOTE's neighbour vote)
NEW_LABEL_VECTORS = ("mlsmote",)
