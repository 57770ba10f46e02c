//! S-Mamba (Wang et al., "Is Mamba Effective for Time Series Forecasting?", 2024): each variate's
//! whole look-back window becomes one token (the "inverted" embedding of iTransformer), and
//! encoder layers mix the variate tokens with a bidirectional Mamba, then a feed-forward
//! network:
//!
//! ```text
//! x̂ = normalize(x)                                  per variate over time      (B, L, N)
//! e = Linear_L→E([x̂ᵀ ; x_markᵀ])                    N variate + F time-feature tokens
//! layer:  e = LN₁(e + Mamba(e) + flip(Mamba_r(flip(e))));  e = LN₂(e + FFN(e))
//! ŷ = Linear_E→S(LN(e))ᵀ[:, :, :N];   y = denormalize(ŷ)                       (B, S, N)
//! ```
//!
//! Field names follow the reference (`enc_embedding.value_embedding`,
//! `encoder.attn_layers.{i}.{attention, attention_r, conv1, conv2, norm1, norm2}`,
//! `encoder.norm`, `projector`); the 1×1 convolutions of the FFN are Linear layers here.
//! The mixers are Mamba with `d_conv = 2`, `expand = 1` as in the reference.

use crate::ssm::SequenceMixer;
use crate::ssm::mamba::{MambaMixer, MambaMixerConfig};
use crate::timeseries::{denormalize, normalize};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Device, Tensor};

/// Configuration of an [`SMamba`] (the reference's run arguments).
#[derive(Config, Debug)]
pub struct SMambaConfig {
    /// Look-back L.
    pub seq_len: usize,
    /// Horizon S.
    pub pred_len: usize,
    /// Calendar features per step given as extra tokens (0: none).
    #[config(default = 0)]
    pub time_features: usize,
    /// Token width E.
    #[config(default = 512)]
    pub d_model: usize,
    /// Mamba state size.
    #[config(default = 16)]
    pub d_state: usize,
    /// Hidden width of the feed-forward network.
    #[config(default = 512)]
    pub d_ff: usize,
    /// Encoder layers.
    #[config(default = 2)]
    pub e_layers: usize,
    /// Dropout rate in [0, 1) on the embedding and inside the feed-forward network.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// GELU (the reference's default) or ReLU in the feed-forward network.
    #[config(default = true)]
    pub gelu: bool,
    /// Normalise each variate over the look-back and undo it on the forecast.
    #[config(default = true)]
    pub use_norm: bool,
}

impl SMambaConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        if self.seq_len == 0 || self.pred_len == 0 || self.d_model == 0 || self.d_state == 0 {
            return Err(crate::ModelError::InvalidConfig(
                "s-mamba: seq_len, pred_len, d_model and d_state must be positive".into(),
            ));
        }
        if self.d_ff == 0 || self.e_layers == 0 || !(0.0..1.0).contains(&self.dropout) {
            return Err(crate::ModelError::InvalidConfig(
                "s-mamba: d_ff and e_layers must be positive and 0 <= dropout < 1".into(),
            ));
        }
        Ok(())
    }

    /// The Mamba of each direction.
    pub fn mixer(&self) -> MambaMixerConfig {
        MambaMixerConfig::new(self.d_model)
            .with_d_state(self.d_state)
            .with_d_conv(2)
            .with_expand(1)
    }

    /// A model with PyTorch-default Linear/LayerNorm init and mamba_ssm's mixer init.
    ///
    /// # Panics
    /// On an invalid configuration (see [`SMambaConfig::validate`]).
    pub fn init(&self, device: &Device) -> SMamba {
        self.validate().unwrap_or_else(|e| panic!("{e}"));
        let e = self.d_model;
        let mixer = self.mixer();
        let norm = || LayerNormConfig::new(e).init(device);
        SMamba {
            enc_embedding: InvertedEmbedding {
                value_embedding: LinearConfig::new(self.seq_len, e).init(device),
            },
            encoder: SMambaEncoder {
                attn_layers: (0..self.e_layers)
                    .map(|_| SMambaLayer {
                        attention: mixer.init(device),
                        attention_r: mixer.init(device),
                        conv1: LinearConfig::new(e, self.d_ff).init(device),
                        conv2: LinearConfig::new(self.d_ff, e).init(device),
                        norm1: norm(),
                        norm2: norm(),
                    })
                    .collect(),
                norm: norm(),
            },
            projector: LinearConfig::new(e, self.pred_len).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            gelu: self.gelu,
            use_norm: self.use_norm,
            time_features: self.time_features,
        }
    }
}

/// The inverted embedding: each variate's (and time feature's) series of L steps → one token.
#[derive(Module, Debug)]
pub struct InvertedEmbedding {
    /// Linear L → E (weight (E, L)), `enc_embedding.value_embedding`.
    pub value_embedding: Linear,
}

/// One encoder layer: bidirectional Mamba over the tokens, then the feed-forward network.
#[derive(Module, Debug)]
pub struct SMambaLayer {
    /// The forward-direction Mamba over the tokens (`attention`).
    pub attention: MambaMixer,
    /// The Mamba over the reversed tokens (`attention_r`).
    pub attention_r: MambaMixer,
    /// First FFN layer E → d_ff (the reference's 1×1 `conv1`).
    pub conv1: Linear,
    /// Second FFN layer d_ff → E (the reference's 1×1 `conv2`).
    pub conv2: Linear,
    /// LayerNorm after the Mamba residual (`norm1`).
    pub norm1: LayerNorm,
    /// LayerNorm after the FFN residual (`norm2`).
    pub norm2: LayerNorm,
}

/// The encoder layers and the final LayerNorm.
#[derive(Module, Debug)]
pub struct SMambaEncoder {
    /// The encoder layers (`encoder.attn_layers.{i}`).
    pub attn_layers: Vec<SMambaLayer>,
    /// The final LayerNorm over E (`encoder.norm`).
    pub norm: LayerNorm,
}

/// The S-Mamba forecaster.
#[derive(Module, Debug)]
pub struct SMamba {
    /// The inverted embedding of the variate and time-feature series.
    pub enc_embedding: InvertedEmbedding,
    /// The encoder layers and final norm.
    pub encoder: SMambaEncoder,
    /// Linear E → S from each token to its horizon (`projector`).
    pub projector: Linear,
    /// Dropout on the embedding and inside the feed-forward networks.
    pub dropout: Dropout,
    /// GELU (`true`) or ReLU in the feed-forward networks.
    pub gelu: bool,
    /// Whether to normalise each variate over the look-back and undo it on the forecast.
    pub use_norm: bool,
    /// Calendar features taken as extra tokens (0: none).
    pub time_features: usize,
}

impl SMamba {
    /// Whether the forecast reads calendar features.
    pub fn takes_time_features(&self) -> bool {
        self.time_features > 0
    }

    fn layer(&self, l: &SMambaLayer, x: Tensor<3>) -> Tensor<3> {
        let mixed =
            l.attention.forward(x.clone()) + l.attention_r.forward(x.clone().flip([1])).flip([1]);
        let x = l.norm1.forward(x + mixed);
        let h = l.conv1.forward(x.clone());
        let h = if self.gelu { gelu(h) } else { relu(h) };
        let y = self
            .dropout
            .forward(l.conv2.forward(self.dropout.forward(h)));
        l.norm2.forward(x + y)
    }

    /// The forecast (B, S, N) of look-backs `x` (B, L, N) with calendar features `x_mark`
    /// (B, L, F) as extra tokens when given.
    pub fn forward(&self, x: Tensor<3>, x_mark: Option<Tensor<3>>) -> Tensor<3> {
        let [_, _, n] = x.dims();
        let (x, stats) = if self.use_norm {
            let (x, mean, std) = normalize(x);
            (x, Some((mean, std)))
        } else {
            (x, None)
        };
        let mut tokens = x.swap_dims(1, 2); // (B, N, L)
        if let Some(m) = x_mark {
            assert_eq!(
                m.dims()[2],
                self.time_features,
                "s-mamba: x_mark has {} features, the model takes {}",
                m.dims()[2],
                self.time_features
            );
            tokens = Tensor::cat(vec![tokens, m.swap_dims(1, 2)], 1);
        }
        let mut e = self
            .dropout
            .forward(self.enc_embedding.value_embedding.forward(tokens));
        for l in &self.encoder.attn_layers {
            e = self.layer(l, e);
        }
        let e = self.encoder.norm.forward(e);
        let y = self.projector.forward(e).swap_dims(1, 2).narrow(2, 0, n); // (B, S, N)
        match stats {
            Some((mean, std)) => denormalize(y, mean, std),
            None => y,
        }
    }
}
