//! `zoo train lm`: a language model trained on text ([`crate::common::lm`]), saved as a Hugging
//! Face model directory; prints the folder and the last validation loss.

use crate::common::error::CliResult;
use crate::common::lm::{LmArgs, LmProgress, train};

pub fn run(a: LmArgs) -> CliResult {
    let run = train(
        &a,
        &LmProgress {
            bar: true,
            verbose: true,
        },
    )?;
    let last = run.trained.evals.last();
    println!(
        "saved {} (config.json, model.safetensors, tokenizer.json, metrics.json){}",
        run.out.display(),
        last.map_or(String::new(), |e| format!(
            "; validation loss {:.4} nats/token, perplexity {:.3}",
            e.val_loss, e.val_ppl
        ))
    );
    Ok(())
}
