"""The projection head and the pooling layer: shapes and argument errors."""

import keras
import pytest

from simclr_wrap.heads import pooling_layer, projection_head


def test_projection_head_widths():
    assert projection_head(keras.Input((16,)), [32, 8], seed=0).shape == (None, 8)


@pytest.mark.parametrize("widths, error", [
    ((), ValueError), ((32, 0), ValueError), ((32, 8.5), TypeError), ((True, 8), TypeError), (8, TypeError),
])
def test_projection_head_refuses_bad_widths(widths, error):
    with pytest.raises(error, match=r"Expected feat_dims_ph to be one or more integer widths >= 1\. "
                                    r"Received: feat_dims_ph="):
        projection_head(keras.Input((16,)), widths)


def test_projection_head_refuses_a_negative_regularisation():
    with pytest.raises(ValueError, match="Expected regularisation to be a number >= 0. Received: regularisation=-1"):
        projection_head(keras.Input((16,)), (8,), regularisation=-1)


def test_pooling_must_be_known():
    with pytest.raises(ValueError, match=r"Expected pooling to be one of \['flatten', 'avg', 'max'\]\. "
                                         r"Received: pooling='mean'"):
        pooling_layer("mean")
