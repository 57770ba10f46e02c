//! Text in and out through the `tokenizers` crate (a `tokenizer.json`, e.g. GPT-NeoX's for the
//! published Mamba checkpoints).

use crate::error::{ModelError, Result};
use std::path::Path;

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
        tokenizers::Tokenizer::from_file(path)
            .map(|inner| Self { inner })
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))
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
