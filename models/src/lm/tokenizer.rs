//! Text in and out through the `tokenizers` crate (a `tokenizer.json`, e.g. GPT-NeoX's for the
//! published Mamba checkpoints).

use crate::error::{ModelError, Result};
use std::path::Path;

/// Runs a `tokenizers` parse, turning a panic inside that crate into an error: some malformed
/// `tokenizer.json` files (a misspelt `null` in the decoder, found by fuzzing) make tokenizers
/// 0.22 panic ("Helper: Error(\"expected value\" ...)") instead of returning its error.
fn guarded<T, E: std::fmt::Display>(
    parse: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("not a valid tokenizer.json ({what})"))
        }
    }
}

/// A loaded tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::Tokenizer(format!(
                "{} does not exist",
                path.display()
            )));
        }
        guarded(|| tokenizers::Tokenizer::from_file(path))
            .map(|inner| Self { inner })
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// A tokenizer from the text of a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        guarded(|| json.parse::<tokenizers::Tokenizer>())
            .map(|inner| Self { inner })
            .map_err(ModelError::Tokenizer)
    }

    /// The byte-level tokenizer of models trained with `zoo train lm --bytes`: token `b` is
    /// the byte `b` (0..=255), [`BYTE_EOS`] ends a text ([`byte_level_tokenizer_json`]).
    pub fn bytes() -> Self {
        Self::from_json(&byte_level_tokenizer_json()).expect("the byte-level tokenizer is valid")
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token (e.g. `<|endoftext|>`), if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<usize> {
        self.inner.token_to_id(token).map(|i| i as usize)
    }

    /// The end-of-text token: the first of `<|endoftext|>`, `</s>`, `<eos>`, `[SEP]` in the
    /// vocabulary.
    pub fn eos_token_id(&self) -> Option<usize> {
        ["<|endoftext|>", "</s>", "<eos>", "[SEP]"]
            .iter()
            .find_map(|t| self.token_to_id(t))
    }

    /// The `tokenizer.json` text of this tokenizer.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Token ids of a text (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().iter().map(|&i| i as usize).collect())
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }
}

/// The end-of-text token of the byte-level tokenizer.
pub const BYTE_EOS: usize = 256;

/// GPT-2's byte-to-character table (the byte-level pre-tokenizer's alphabet): printable
/// Latin-1 bytes stand for themselves, the others for the characters from U+0100 up, in byte
/// order.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("a valid character")
}

/// A `tokenizer.json` (Hugging Face `tokenizers`, loadable by transformers'
/// `PreTrainedTokenizerFast`) in which token `b` is the byte `b` and [`BYTE_EOS`] is
/// `<|endoftext|>`: a byte-level BPE with no merges and no pre-splitting.
pub fn byte_level_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..=255u8)
        .map(|b| (byte_char(b).to_string(), serde_json::Value::from(b)))
        .collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false
    });
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": BYTE_EOS, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []
        }
    })
    .to_string()
}

/// Streams text as tokens arrive: each call returns the newly completed text, holding back
/// bytes that do not yet form a whole character.
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<usize>,
    printed: usize,
}

impl<'a> TextStream<'a> {
    /// A stream continuing `prefix` (the prompt): only text after the prompt's is returned, so
    /// spacing between prompt and continuation comes out as the tokenizer decodes it.
    pub fn new(tokenizer: &'a TextTokenizer, prefix: &[usize]) -> Result<Self> {
        let printed = tokenizer.decode(prefix)?.len();
        Ok(Self {
            tokenizer,
            ids: prefix.to_vec(),
            printed,
        })
    }

    /// Adds a token; returns the text it completes.
    pub fn push(&mut self, id: usize) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        match text.get(self.printed..) {
            Some(new) => {
                let new = new.to_string();
                self.printed = text.len();
                Ok(new)
            }
            None => Ok(String::new()),
        }
    }
}
