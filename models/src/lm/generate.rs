//! Token generation on any [`CausalLm`]: a parallel prefill, then one fused recurrent step per
//! token; greedy decoding or sampling with temperature, top-k, top-p and a repetition penalty.

use super::CausalLm;
use crate::error::{ModelError, Result};
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// A draw from `softmax(logits / temperature)`, restricted to the `top_k` most likely
    /// tokens and to the smallest set whose probability reaches `top_p`.
    Sample {
        /// Divides the logits before the softmax: below 1 sharpens, above 1 flattens (positive).
        temperature: f32,
        /// Keep only the `k` most likely tokens (at least 1); `None`: all.
        top_k: Option<usize>,
        /// Keep the smallest set of most likely tokens whose probability reaches `p`, in (0, 1];
        /// `None`: all.
        top_p: Option<f32>,
    },
}

/// Settings of [`generate`].
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// Tokens generated per row at most, after the prompt (default 32).
    pub max_new_tokens: usize,
    /// How each token is chosen (default [`Sampling::Greedy`]).
    pub sampling: Sampling,
    /// HF-style: a seen token's positive logit is divided by it, a negative one multiplied.
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Stop a row when it emits this token (it is kept in the output).
    pub eos_token_id: Option<usize>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            sampling: Sampling::Greedy,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_id: None,
        }
    }
}

impl GenerationConfig {
    /// Rejects impossible settings.
    pub fn validate(&self) -> Result<()> {
        if self.repetition_penalty.is_nan() || self.repetition_penalty <= 0.0 {
            return Err(ModelError::Invalid(format!(
                "repetition penalty must be positive, found {}",
                self.repetition_penalty
            )));
        }
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } = &self.sampling
        {
            if !temperature.is_finite() || *temperature <= 0.0 {
                return Err(ModelError::Invalid(format!(
                    "temperature must be positive, found {temperature} (use greedy decoding for 0)"
                )));
            }
            if *top_k == Some(0) {
                return Err(ModelError::Invalid("top-k must be at least 1".into()));
            }
            if let Some(p) = top_p
                && (p.is_nan() || *p <= 0.0 || *p > 1.0)
            {
                return Err(ModelError::Invalid(format!(
                    "top-p must be in (0, 1], found {p}"
                )));
            }
        }
        Ok(())
    }
}

/// Chooses tokens from logits, with its own seeded generator.
pub struct Sampler {
    config: GenerationConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded with `config.seed`.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] when `config` fails [`GenerationConfig::validate`].
    pub fn new(config: GenerationConfig) -> Result<Self> {
        config.validate()?;
        let rng = StdRng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// The next token given one row of logits and the tokens seen so far.
    pub fn next(&mut self, logits: &[f32], history: &[usize]) -> usize {
        let mut l = logits.to_vec();
        if self.config.repetition_penalty != 1.0 {
            let p = self.config.repetition_penalty;
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            let v = l.len();
            for &t in seen.iter().filter(|&&t| t < v) {
                l[t] = if l[t] > 0.0 { l[t] / p } else { l[t] * p };
            }
        }
        match self.config.sampling.clone() {
            Sampling::Greedy => argmax(&l),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            } => {
                let mut order: Vec<usize> = (0..l.len()).collect();
                order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
                if let Some(k) = top_k {
                    order.truncate(k.max(1));
                }
                let max = l[order[0]] / temperature;
                let mut probs: Vec<f64> = order
                    .iter()
                    .map(|&i| ((l[i] / temperature - max) as f64).exp())
                    .collect();
                let total: f64 = probs.iter().sum();
                probs.iter_mut().for_each(|p| *p /= total);
                if let Some(p) = top_p {
                    let mut acc = 0.0;
                    let mut keep = probs.len();
                    for (i, q) in probs.iter().enumerate() {
                        acc += q;
                        if acc >= p as f64 {
                            keep = i + 1;
                            break;
                        }
                    }
                    probs.truncate(keep);
                    order.truncate(keep);
                }
                let total: f64 = probs.iter().sum();
                let mut r = self.rng.random::<f64>() * total;
                for (i, q) in probs.iter().enumerate() {
                    r -= q;
                    if r <= 0.0 {
                        return order[i];
                    }
                }
                *order.last().expect("at least one candidate")
            }
        }
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

fn ids_tensor<M: CausalLm>(model: &M, rows: &[&Vec<usize>]) -> Tensor<2, Int> {
    let len = rows[0].len();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&t| t as i64))
        .collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), &model.device())
}

fn host_rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let [b, v] = logits.dims();
    let flat = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 logits");
    (0..b).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Generates up to `max_new_tokens` tokens after each prompt row and returns only the new
/// tokens, one list per row. `on_token(row, token)` is called as each token is chosen
/// (streaming).
///
/// Prompts of different lengths decode as one batch with no padding: each group of equal
/// lengths is prefilled on its own (so no pad token ever enters a state), the groups' states
/// are joined into one batch, and every step then decodes all unfinished rows together. A row
/// stops at EOS or after `max_new_tokens` and leaves the batch; each row gives the tokens it
/// gives alone (greedy).
pub fn generate<M: CausalLm>(
    model: &M,
    prompts: &[Vec<usize>],
    config: &GenerationConfig,
    mut on_token: impl FnMut(usize, usize),
) -> Result<Vec<Vec<usize>>> {
    decode(model, prompts, config, |row, token, _| on_token(row, token))
}

/// The new tokens of each row and the logits each was chosen from.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `tokens[row]`: row `row`'s new tokens (the prompt excluded).
    pub tokens: Vec<Vec<usize>>,
    /// `logits[row][k]`: the (vocab) logits of row `row`'s `k`-th new token.
    pub logits: Vec<Vec<Vec<f32>>>,
}

/// [`generate`], also returning for each row the logits each new token was chosen from.
pub fn generate_with_logits<M: CausalLm>(
    model: &M,
    prompts: &[Vec<usize>],
    config: &GenerationConfig,
) -> Result<Generated> {
    let mut logits = vec![Vec::new(); prompts.len()];
    let tokens = decode(model, prompts, config, |row, _, l| {
        logits[row].push(l.to_vec())
    })?;
    Ok(Generated { tokens, logits })
}

fn decode<M: CausalLm>(
    model: &M,
    prompts: &[Vec<usize>],
    config: &GenerationConfig,
    mut on_token: impl FnMut(usize, usize, &[f32]),
) -> Result<Vec<Vec<usize>>> {
    config.validate()?;
    if prompts.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    for row in prompts {
        if row.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        if let Some(&id) = row.iter().find(|&&id| id >= model.vocab_size()) {
            return Err(ModelError::TokenOutOfRange {
                id,
                vocab: model.vocab_size(),
            });
        }
    }
    let mut sampler = Sampler::new(config.clone())?;
    let mut out = vec![Vec::new(); prompts.len()];
    if config.max_new_tokens == 0 {
        return Ok(out);
    }
    // Prefill each group of equal prompt lengths as one batch, then join the groups' states:
    // `active[j]` is the prompt of batch row j.
    let mut lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut active = Vec::with_capacity(prompts.len());
    let mut next_logits = Vec::with_capacity(prompts.len());
    let mut caches = Vec::with_capacity(lengths.len());
    for len in lengths {
        let members: Vec<usize> = (0..prompts.len())
            .filter(|&i| prompts[i].len() == len)
            .collect();
        let rows: Vec<&Vec<usize>> = members.iter().map(|&i| &prompts[i]).collect();
        let (logits, cache) = model.prefill_last(ids_tensor(model, &rows));
        next_logits.extend(host_rows(logits));

        active.extend(members);
        caches.push(cache);
    }
    let mut cache = if caches.len() == 1 {
        caches.pop().expect("one group")
    } else {
        model.join_caches(caches)
    };
    let mut history: Vec<Vec<usize>> = active.iter().map(|&i| prompts[i].clone()).collect();
    for step in 0..config.max_new_tokens {
        let mut chosen = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (j, &row) in active.iter().enumerate() {
            let t = sampler.next(&next_logits[j], &history[j]);
            history[j].push(t);
            out[row].push(t);
            on_token(row, t, &next_logits[j]);
            if config.eos_token_id != Some(t) {
                keep.push(j);
            }
            chosen.push(t);
        }
        if step + 1 == config.max_new_tokens || keep.is_empty() {
            break;
        }
        // Rows that met EOS leave the batch.
        if keep.len() < active.len() {
            cache = model.keep_rows(cache, &keep);
            active = keep.iter().map(|&j| active[j]).collect();
            history = keep
                .iter()
                .map(|&j| std::mem::take(&mut history[j]))
                .collect();
            chosen = keep.iter().map(|&j| chosen[j]).collect();
        }
        let ids = Tensor::<1, Int>::from_data(
            TensorData::new(
                chosen.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [chosen.len()],
            ),
            &model.device(),
        );
        let (logits, c) = model.step(ids, cache);
        cache = c;
        next_logits = host_rows(logits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(sampling: Sampling, seed: u64) -> Sampler {
        Sampler::new(GenerationConfig {
            sampling,
            seed,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn greedy_and_filters() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        assert_eq!(sampler(Sampling::Greedy, 0).next(&logits, &[]), 1);
        // top-k 1 is greedy whatever the temperature.
        let mut s = sampler(
            Sampling::Sample {
                temperature: 5.0,
                top_k: Some(1),
                top_p: None,
            },
            7,
        );
        for _ in 0..20 {
            assert_eq!(s.next(&logits, &[]), 1);
        }
        // top-p small keeps only the best token.
        let mut s = sampler(
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.01),
            },
            3,
        );
        assert_eq!(s.next(&logits, &[]), 1);
        // Sampling follows the distribution: token 1 and 2 nearly equally likely.
        let mut s = sampler(
            Sampling::Sample {
                temperature: 1.0,
                top_k: Some(2),
                top_p: None,
            },
            11,
        );
        let ones = (0..2000).filter(|_| s.next(&logits, &[]) == 1).count();
        // p(1) = e^0.1 / (1 + e^0.1) = 0.525; 2000 draws: sd 11.
        assert!((980..1120).contains(&ones), "{ones}");
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(GenerationConfig {
            repetition_penalty: 2.0,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.next(&[0.1, 2.0, 1.9, -1.0], &[1]), 2);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = Sampling::Sample {
            temperature: 0.8,
            top_k: Some(20),
            top_p: Some(0.9),
        };
        let mut a = sampler(cfg.clone(), 42);
        let mut b = sampler(cfg, 42);
        for _ in 0..30 {
            assert_eq!(a.next(&logits, &[]), b.next(&logits, &[]));
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        for sampling in [
            Sampling::Sample {
                temperature: 0.0,
                top_k: None,
                top_p: None,
            },
            Sampling::Sample {
                temperature: 1.0,
                top_k: Some(0),
                top_p: None,
            },
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(1.5),
            },
        ] {
            assert!(
                Sampler::new(GenerationConfig {
                    sampling,
                    ..Default::default()
                })
                .is_err()
            );
        }
    }
}
