"""The GAN objectives and the gradient penalty as small pure functions; where the losses live."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_python

from wavegan.config import GP_WEIGHTS, LOSSES, OptimConfig
from wavegan.training import losses


def test_every_configurable_loss_has_an_objective_and_its_own_gradient_penalty_weight():
  assert set(losses.LOSSES) == set(LOSSES)
  for name in LOSSES:
    weight = OptimConfig(loss=name).resolved().gp_weight
    assert weight == GP_WEIGHTS.get(name, 0.0)
  assert OptimConfig(loss="wgan-gp").resolved().gp_weight == 10.0
  assert OptimConfig(loss="hinge").resolved().gp_weight == 0.0
  assert OptimConfig(loss="hinge", gp_weight=3.0).resolved().gp_weight == 3.0


def test_objectives_at_known_logits():
  ones, zeros = jnp.ones(4), jnp.zeros(4)
  assert float(losses.wgan_d(ones, zeros)) == -1.0
  assert float(losses.wgan_g(ones)) == -1.0
  assert float(losses.hinge_d(ones, -ones)) == 0.0
  assert float(losses.hinge_d(zeros, zeros)) == 2.0
  assert float(losses.lsgan_d(ones, zeros)) == 0.0
  assert float(losses.lsgan_g(zeros)) == 0.5
  np.testing.assert_allclose(float(losses.nonsaturating_d(zeros, zeros)), 2 * np.log(2), rtol=1e-6)
  np.testing.assert_allclose(float(losses.nonsaturating_g(zeros)), np.log(2), rtol=1e-6)


@pytest.mark.parametrize("norm", [1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic(norm):
  # D(x) = <w, x> has gradient w everywhere: the penalty is (||w|| - 1)^2 at any interpolate.
  w = jax.random.normal(jax.random.key(0), (16, 2))
  w = norm * w / jnp.linalg.norm(w)
  critic = lambda x: jnp.sum(x * w, axis=(1, 2))  # [B, 16, 2] -> [B]
  real = jax.random.normal(jax.random.key(1), (3, 16, 2))
  fake = jax.random.normal(jax.random.key(2), (3, 16, 2))
  gp = losses.gradient_penalty(critic, real, fake, jax.random.key(3))
  assert float(gp) == pytest.approx((norm - 1.0) ** 2, abs=1e-5)


def test_interpolation_weights_one_per_example():
  eps = losses.interpolation_weights(jax.random.key(0), 5, 4)
  assert eps.shape == (5, 1, 1, 1) and eps.dtype == jnp.float32
  assert bool(jnp.all((eps >= 0) & (eps < 1)))


def test_the_networks_do_not_import_the_training_code():
  """Layers point down: importing the critics (and every model) loads no training module."""
  script = (
    "import sys; import wavegan.models.critics, wavegan.models.kinds; "
    "print(sorted(m for m in sys.modules if m.startswith('wavegan.training')))"
  )
  out = run_python(script, check=True)
  assert out.stdout.strip() == "[]", out.stdout


def test_r1_penalty_of_a_linear_and_a_quadratic_critic():
  # D(x) = <w, x>: gradient w at every clip, R1 = ||w||^2.
  w = jax.random.normal(jax.random.key(0), (16, 2))
  real = jax.random.normal(jax.random.key(1), (3, 16, 2))
  linear = lambda x: jnp.sum(x * w, axis=(1, 2))
  assert float(losses.r1_penalty(linear, real)) == pytest.approx(float(jnp.sum(w**2)), rel=1e-5)
  # D(x) = sum x^2: gradient 2x, R1 = mean over clips of 4 ||x||^2 (by hand, in numpy).
  quadratic = lambda x: jnp.sum(x**2, axis=(1, 2))
  want = np.mean(4.0 * np.sum(np.asarray(real) ** 2, axis=(1, 2)))
  assert float(losses.r1_penalty(quadratic, real)) == pytest.approx(want, rel=1e-5)
