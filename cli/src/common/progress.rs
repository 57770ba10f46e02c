//! The progress of the tasks trained with burn-train's `Learner` (`zoo train s4d-digits`, the
//! image, forecasting and graph tasks): a bar per split on a terminal, one line per split.

/// The training progress as an indicatif bar per split on a terminal, and one line per split
/// with its metrics everywhere (burn's own non-terminal renderer prints a line per batch).
#[derive(Default)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    epoch: usize,
    epochs: usize,
    split: String,
    started: Option<std::time::Instant>,
    /// Metric names by id, and the latest value of each in the current split.
    names: Vec<(burn::train::metric::MetricId, String)>,
    latest: Vec<(String, String)>,
}

impl Progress {
    fn record(&mut self, state: burn::train::renderer::MetricState) {
        use burn::train::renderer::MetricState;
        let entry = match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => e,
        };
        let name = self
            .names
            .iter()
            .find(|(id, _)| *id == entry.metric_id)
            .map_or_else(|| "metric".to_string(), |(_, n)| n.clone());
        let value = entry.serialized_entry.formatted;
        match self.latest.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.latest.push((name, value)),
        }
    }
}

impl burn::train::renderer::MetricsRendererTraining for Progress {
    fn update_train(&mut self, state: burn::train::renderer::MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: burn::train::renderer::MetricState) {
        self.record(state);
    }
}

impl burn::train::renderer::MetricsRendererEvaluation for Progress {
    fn update_test(
        &mut self,
        _name: burn::train::renderer::EvaluationName,
        state: burn::train::renderer::MetricState,
    ) {
        self.record(state);
    }
}

impl burn::train::logger::EvaluationProgressLogger for Progress {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, name: &str, total_items: usize) {
        burn::train::logger::TrainingProgressLogger::start_split(self, name, total_items);
    }
    fn update_test_progress(&mut self, items_processed: usize) {
        burn::train::logger::TrainingProgressLogger::update_split(self, items_processed);
    }
    fn end_test(&mut self) {
        burn::train::logger::TrainingProgressLogger::end_split(self);
    }
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl burn::train::renderer::MetricsRenderer for Progress {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: burn::train::metric::MetricDefinition) {
        self.names
            .push((definition.metric_id, definition.name.to_string()));
    }
}

impl burn::train::logger::TrainingProgressLogger for Progress {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        let bar = indicatif::ProgressBar::new(total_items as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} items ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{} {split}", self.epoch, self.epochs));
        self.bar = Some(bar);
        self.split = split.to_string();
        self.started = Some(std::time::Instant::now());
        self.latest.clear();
    }

    fn update_split(&mut self, items_processed: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(items_processed as u64);
        }
    }

    fn end_split(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let secs = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let metrics: Vec<String> = self
            .latest
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        println!(
            "epoch {}/{} {}: {} ({secs:.1} s)",
            self.epoch,
            self.epochs,
            self.split,
            metrics.join(", ")
        );
    }

    fn end(&mut self) {}

    // Per-iteration events: the bar and the per-split lines already say it.
    fn log_event_training(&mut self, _event: String) {}
}
