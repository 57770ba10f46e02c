//! Forecasting data in the Informer/Autoformer layout: a CSV whose first column is a date and
//! whose other columns are the variables (ETTh1, ETTm1, Weather, Electricity, ...).
//!
//! - [`read_series_csv`]: the table, dates strictly increasing, missing cells an error or
//!   linearly interpolated ([`Missing`]);
//! - [`SplitScheme`]: the standard splits — ETT's 12/4/4 months (hourly or 15-minute rows),
//!   70/10/20 for the others — with the validation and test splits starting `seq_len` rows early
//!   so that their first window has a full look-back, as in the reference loaders;
//! - [`StandardScaler`]: per-variable mean and standard deviation fit on the training split;
//! - [`time_features`]: the calendar features of the reference (`timeenc = 1`, "timeF"),
//!   each scaled to [−0.5, 0.5], chosen by the sampling frequency ([`Freq`]);
//! - [`ForecastDataset`]: sliding windows (look-back `seq_len`, horizon `pred_len`) over one
//!   split, and [`ForecastBatcher`] stacking them into (B, L, C) tensors.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Tensor, TensorData};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong reading a series; each names the file and, where it applies, the line.
pub type SeriesError = crate::error::DataFileError;

/// What to do with empty cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// An empty cell is an error naming its line and column.
    Error,
    /// Empty cells are filled by linear interpolation between their neighbours in time (the
    /// nearest value at the ends); a column with no value at all is an error.
    Interpolate,
}

/// A multivariate series: `values` is (T, C) row-major.
#[derive(Debug, Clone)]
pub struct SeriesFrame {
    /// The time stamp of each row (T), strictly increasing.
    pub dates: Vec<NaiveDateTime>,
    /// The variables' names (C), from the header after the date column.
    pub columns: Vec<String>,
    /// The values (T, C) row-major: row `t`, variable `j` at `t * C + j`.
    pub values: Vec<f32>,
}

impl SeriesFrame {
    /// Time steps T.
    pub fn len(&self) -> usize {
        self.dates.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.dates.is_empty()
    }

    /// Variables C.
    pub fn channels(&self) -> usize {
        self.columns.len()
    }

    /// Keeps the named columns, in that order (e.g. only the target `OT`, the "S" setting).
    pub fn select(&self, names: &[&str]) -> Result<SeriesFrame, SeriesError> {
        let idx: Vec<usize> = names
            .iter()
            .map(|n| {
                self.columns.iter().position(|c| c == n).ok_or_else(|| {
                    SeriesError::Invalid(format!(
                        "no column '{n}' (columns: {})",
                        self.columns.join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let c = self.channels();
        Ok(SeriesFrame {
            dates: self.dates.clone(),
            columns: names.iter().map(|s| s.to_string()).collect(),
            values: (0..self.len())
                .flat_map(|t| idx.iter().map(move |&i| (t, i)))
                .map(|(t, i)| self.values[t * c + i])
                .collect(),
        })
    }
}

/// Parses the date formats the forecasting CSVs use.
pub fn parse_date(text: &str) -> Option<NaiveDateTime> {
    let t = text.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y/%m/%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%d.%m.%Y %H:%M:%S",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d);
        }
    }
    for f in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            return d.and_hms_opt(0, 0, 0);
        }
    }
    None
}

/// Reads a forecasting CSV: a header, a date column first, then numeric variables.
pub fn read_series_csv(path: &Path, missing: Missing) -> Result<SeriesFrame, SeriesError> {
    let parse = |line: usize, message: String| SeriesError::Parse {
        path: path.into(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_path(path)
        .map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(source) => SeriesError::Io {
                path: path.into(),
                source,
            },
            other => parse(1, format!("{other:?}")),
        })?;
    let header = reader
        .headers()
        .map_err(|e| parse(1, e.to_string()))?
        .clone();
    if header.len() < 2 {
        return Err(parse(
            1,
            "expected a date column then at least one variable".into(),
        ));
    }
    let columns: Vec<String> = header
        .iter()
        .skip(1)
        .map(|s| s.trim().to_string())
        .collect();
    let c = columns.len();
    let mut dates = Vec::new();
    let mut cells: Vec<Option<f32>> = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| parse(line, e.to_string()))?;
        let date = parse_date(&record[0])
            .ok_or_else(|| parse(line, format!("'{}' is not a date", &record[0])))?;
        if dates.last().is_some_and(|d| *d >= date) {
            return Err(parse(
                line,
                format!("date {date} does not come after the one before"),
            ));
        }
        dates.push(date);
        for (j, cell) in record.iter().skip(1).enumerate() {
            let cell = cell.trim();
            if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
                if missing == Missing::Error {
                    return Err(parse(line, format!("column '{}' is empty", columns[j])));
                }
                cells.push(None);
            } else {
                let v: f32 = cell.parse().map_err(|_| {
                    parse(
                        line,
                        format!("column '{}': '{cell}' is not a number", columns[j]),
                    )
                })?;
                cells.push(Some(v));
            }
        }
    }
    if dates.is_empty() {
        return Err(parse(2, "no rows".into()));
    }
    let values = fill_gaps(&cells, dates.len(), c).map_err(|j| {
        SeriesError::Invalid(format!(
            "{}: column '{}' has no value",
            path.display(),
            columns[j]
        ))
    })?;
    Ok(SeriesFrame {
        dates,
        columns,
        values,
    })
}

/// Linear interpolation over the missing cells of each column; `Err(column)` when one has none.
fn fill_gaps(cells: &[Option<f32>], t: usize, c: usize) -> Result<Vec<f32>, usize> {
    let mut out = vec![0f32; t * c];
    for j in 0..c {
        let known: Vec<(usize, f32)> = (0..t)
            .filter_map(|i| cells[i * c + j].map(|v| (i, v)))
            .collect();
        if known.is_empty() {
            return Err(j);
        }
        let mut k = 0;
        for i in 0..t {
            while k + 1 < known.len() && known[k + 1].0 <= i {
                k += 1;
            }
            let (i0, v0) = known[k];
            out[i * c + j] = if i <= i0 || k + 1 == known.len() {
                if i < i0 { known[0].1 } else { v0 }
            } else {
                let (i1, v1) = known[k + 1];
                v0 + (v1 - v0) * (i - i0) as f32 / (i1 - i0) as f32
            };
        }
    }
    Ok(out)
}

/// The standard train/validation/test splits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitScheme {
    /// ETTh: 12, 4 and 4 months of hourly rows (30-day months).
    EttHourly,
    /// ETTm: the same months of 15-minute rows.
    EttMinute,
    /// The first `train` and the last `test` fractions, the rest for validation (0.7 / 0.2 in
    /// the references for Weather, Electricity, Traffic, ...).
    Ratio {
        /// The fraction of rows for training, taken from the start.
        train: f64,
        /// The fraction of rows for testing, taken from the end.
        test: f64,
    },
}

impl SplitScheme {
    /// 70/10/20.
    pub fn standard() -> Self {
        SplitScheme::Ratio {
            train: 0.7,
            test: 0.2,
        }
    }
}

/// The three splits as half-open row ranges `[start, end)`; validation and test start `seq_len`
/// rows before their first target so the first window has a full look-back.
pub fn split_borders(
    n: usize,
    seq_len: usize,
    scheme: SplitScheme,
) -> Result<[(usize, usize); 3], SeriesError> {
    let (train, val, test) = match scheme {
        SplitScheme::EttHourly | SplitScheme::EttMinute => {
            let per_month = if scheme == SplitScheme::EttHourly {
                30 * 24
            } else {
                30 * 24 * 4
            };
            (12 * per_month, 4 * per_month, 4 * per_month)
        }
        SplitScheme::Ratio { train, test } => {
            if !(train > 0.0 && test > 0.0 && train + test < 1.0) {
                return Err(SeriesError::Invalid(format!(
                    "split fractions train {train} and test {test} must be positive with a sum below 1"
                )));
            }
            let tr = (n as f64 * train) as usize;
            let te = (n as f64 * test) as usize;
            (tr, n - tr - te, te)
        }
    };
    if train + val + test > n || train < seq_len || val == 0 || test == 0 {
        return Err(SeriesError::Invalid(format!(
            "{n} rows cannot hold the splits {train}/{val}/{test} with a look-back of {seq_len}"
        )));
    }
    let (b1, b2) = (train, train + val);
    Ok([(0, b1), (b1 - seq_len, b2), (b2 - seq_len, b2 + test)])
}

/// Per-variable standardisation `(x − mean) / std`, fit on some rows.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardScaler {
    /// Per-variable mean (C).
    pub mean: Vec<f32>,
    /// Per-variable standard deviation (C), 1 for a constant variable.
    pub std: Vec<f32>,
}

impl StandardScaler {
    /// Fits on rows `[start, end)` of a (T, C) table (population standard deviation, as
    /// scikit-learn's `StandardScaler`; a constant column gets std 1).
    pub fn fit(values: &[f32], channels: usize, rows: (usize, usize)) -> Self {
        let n = (rows.1 - rows.0).max(1) as f64;
        let mut mean = vec![0f64; channels];
        let mut sq = vec![0f64; channels];
        for t in rows.0..rows.1 {
            for j in 0..channels {
                mean[j] += values[t * channels + j] as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for t in rows.0..rows.1 {
            for j in 0..channels {
                sq[j] += (values[t * channels + j] as f64 - mean[j]).powi(2);
            }
        }
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: sq
                .iter()
                .map(|&s| {
                    let sd = (s / n).sqrt();
                    if sd > 1e-12 { sd as f32 } else { 1.0 }
                })
                .collect(),
        }
    }

    /// Standardises a (T, C) table.
    pub fn transform(&self, values: &[f32]) -> Vec<f32> {
        let c = self.mean.len();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (v - self.mean[i % c]) / self.std[i % c])
            .collect()
    }

    /// Undoes [`StandardScaler::transform`] on a (.., C) tensor.
    pub fn inverse<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let c = self.mean.len();
        let mut dims = [1; D];
        dims[D - 1] = c;
        let mean = Tensor::<1>::from_floats(self.mean.as_slice(), &device).reshape(dims);
        let std = Tensor::<1>::from_floats(self.std.as_slice(), &device).reshape(dims);
        x * std + mean
    }
}

/// The sampling frequency, which picks the calendar features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freq {
    /// Minutes (or finer): minute of hour, hour of day, day of week, day of month, day of year.
    Minute,
    /// Hours: hour of day, day of week, day of month, day of year.
    Hour,
    /// Days (or business days): day of week, day of month, day of year.
    Day,
    /// Weeks: day of month, week of year.
    Week,
    /// Months: month of year.
    Month,
    /// Quarters: month of year.
    Quarter,
    /// Years: no calendar features.
    Year,
}

impl Freq {
    /// From the references' codes: `t`/`min`, `h`, `d`/`b`, `w`, `m`, `q`, `y`/`a`.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code.to_ascii_lowercase().as_str() {
            "t" | "min" | "minute" => Freq::Minute,
            "h" | "hour" => Freq::Hour,
            "d" | "b" | "day" => Freq::Day,
            "w" | "week" => Freq::Week,
            "m" | "month" => Freq::Month,
            "q" | "quarter" => Freq::Quarter,
            "y" | "a" | "year" => Freq::Year,
            _ => return None,
        })
    }

    /// Guesses the frequency from the median gap between dates.
    pub fn infer(dates: &[NaiveDateTime]) -> Freq {
        let mut gaps: Vec<i64> = dates
            .windows(2)
            .map(|w| (w[1] - w[0]).num_minutes())
            .collect();
        gaps.sort_unstable();
        let g = gaps.get(gaps.len() / 2).copied().unwrap_or(60 * 24);
        match g {
            ..60 => Freq::Minute,
            60..1440 => Freq::Hour,
            1440..10080 => Freq::Day,
            10080..40000 => Freq::Week,
            40000..100000 => Freq::Month,
            100000..400000 => Freq::Quarter,
            _ => Freq::Year,
        }
    }

    /// Calendar features per step.
    pub fn features(&self) -> usize {
        match self {
            Freq::Minute => 5,
            Freq::Hour => 4,
            Freq::Day => 3,
            Freq::Week => 2,
            Freq::Month | Freq::Quarter => 1,
            Freq::Year => 0,
        }
    }
}

/// The calendar features of each date (T, F) row-major, each in [−0.5, 0.5]: minute of hour,
/// hour of day, day of week, day of month, day of year, week of year, month of year, as the
/// frequency calls for (the references' "timeF" encoding).
pub fn time_features(dates: &[NaiveDateTime], freq: Freq) -> Vec<f32> {
    let minute = |d: &NaiveDateTime| d.minute() as f32 / 59.0 - 0.5;
    let hour = |d: &NaiveDateTime| d.hour() as f32 / 23.0 - 0.5;
    let weekday = |d: &NaiveDateTime| d.weekday().num_days_from_monday() as f32 / 6.0 - 0.5;
    let mday = |d: &NaiveDateTime| (d.day() - 1) as f32 / 30.0 - 0.5;
    let yday = |d: &NaiveDateTime| (d.ordinal() - 1) as f32 / 365.0 - 0.5;
    let week = |d: &NaiveDateTime| (d.iso_week().week() - 1) as f32 / 52.0 - 0.5;
    let month = |d: &NaiveDateTime| (d.month() - 1) as f32 / 11.0 - 0.5;
    dates
        .iter()
        .flat_map(|d| match freq {
            Freq::Minute => vec![minute(d), hour(d), weekday(d), mday(d), yday(d)],
            Freq::Hour => vec![hour(d), weekday(d), mday(d), yday(d)],
            Freq::Day => vec![weekday(d), mday(d), yday(d)],
            Freq::Week => vec![mday(d), week(d)],
            Freq::Month | Freq::Quarter => vec![month(d)],
            Freq::Year => vec![],
        })
        .collect()
}

/// One window: look-back `x` (L, C) and its calendar features (L, F); horizon `y` (H, C) and
/// its features (H, F).
#[derive(Debug, Clone)]
pub struct ForecastItem {
    /// The look-back (L, C) row-major, standardised.
    pub x: Vec<f32>,
    /// The look-back's calendar features (L, F).
    pub x_mark: Vec<f32>,
    /// The horizon (H, C) row-major, standardised.
    pub y: Vec<f32>,
    /// The horizon's calendar features (H, F).
    pub y_mark: Vec<f32>,
}

/// The windows of one split, over the standardised series.
#[derive(Debug, Clone)]
pub struct ForecastDataset {
    data: Arc<Vec<f32>>,
    marks: Arc<Vec<f32>>,
    channels: usize,
    features: usize,
    start: usize,
    end: usize,
    /// Look-back L: input steps per window.
    pub seq_len: usize,
    /// Horizon H: steps to predict after the look-back.
    pub pred_len: usize,
}

impl Dataset<ForecastItem> for ForecastDataset {
    fn get(&self, index: usize) -> Result<ForecastItem, DatasetError> {
        if index >= self.len() {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "window {index} out of range for a split of {}",
                self.len()
            ))));
        }
        let (c, f) = (self.channels, self.features);
        let s = self.start + index;
        let (m, e) = (s + self.seq_len, s + self.seq_len + self.pred_len);
        Ok(ForecastItem {
            x: self.data[s * c..m * c].to_vec(),
            x_mark: self.marks[s * f..m * f].to_vec(),
            y: self.data[m * c..e * c].to_vec(),
            y_mark: self.marks[m * f..e * f].to_vec(),
        })
    }

    fn len(&self) -> usize {
        (self.end - self.start + 1).saturating_sub(self.seq_len + self.pred_len)
    }
}

/// A series prepared for forecasting: the three splits' windows and the scaler fit on the
/// training split.
#[derive(Debug, Clone)]
pub struct ForecastSplits {
    /// The training split's windows.
    pub train: ForecastDataset,
    /// The validation split's windows (starting `seq_len` rows before its first target).
    pub val: ForecastDataset,
    /// The test split's windows (starting `seq_len` rows before its first target).
    pub test: ForecastDataset,
    /// The standardisation fit on the training rows; its `inverse` maps predictions back to the
    /// series' units.
    pub scaler: StandardScaler,
    /// The variables' names (C), in column order.
    pub columns: Vec<String>,
    /// The frequency the calendar features were computed for.
    pub freq: Freq,
}

/// Standardises `frame` with a scaler fit on its training split and cuts the three splits'
/// windows (look-back `seq_len`, horizon `pred_len`).
pub fn forecast_splits(
    frame: &SeriesFrame,
    scheme: SplitScheme,
    seq_len: usize,
    pred_len: usize,
    freq: Freq,
) -> Result<ForecastSplits, SeriesError> {
    if seq_len == 0 || pred_len == 0 {
        return Err(SeriesError::Invalid(
            "seq_len and pred_len must be at least 1".into(),
        ));
    }
    let borders = split_borders(frame.len(), seq_len, scheme)?;
    let c = frame.channels();
    let scaler = StandardScaler::fit(&frame.values, c, borders[0]);
    let data = Arc::new(scaler.transform(&frame.values));
    let marks = Arc::new(time_features(&frame.dates, freq));
    let make = |(start, end): (usize, usize)| ForecastDataset {
        data: data.clone(),
        marks: marks.clone(),
        channels: c,
        features: freq.features(),
        start,
        end,
        seq_len,
        pred_len,
    };
    let splits = ForecastSplits {
        train: make(borders[0]),
        val: make(borders[1]),
        test: make(borders[2]),
        scaler,
        columns: frame.columns.clone(),
        freq,
    };
    for (name, d) in [
        ("train", &splits.train),
        ("validation", &splits.val),
        ("test", &splits.test),
    ] {
        if d.is_empty() {
            return Err(SeriesError::Invalid(format!(
                "the {name} split ({} rows) is shorter than look-back {seq_len} + horizon {pred_len}",
                d.end - d.start
            )));
        }
    }
    Ok(splits)
}

/// The shipped series (`data/macrodata.csv`, `co2_weekly.csv`, `sunspots.csv`).
pub fn shipped_series(name: &str) -> PathBuf {
    crate::shipped::shipped_data(name)
}

/// A batch of windows: `x` (B, L, C), `x_mark` (B, L, F), `y` (B, H, C), `y_mark` (B, H, F).
#[derive(Debug, Clone)]
pub struct ForecastBatch {
    /// Look-back windows (B, L, C).
    pub x: Tensor<3>,
    /// Their calendar features (B, L, F).
    pub x_mark: Tensor<3>,
    /// Horizons (B, H, C).
    pub y: Tensor<3>,
    /// Their calendar features (B, H, F).
    pub y_mark: Tensor<3>,
}

/// Stacks [`ForecastItem`]s.
#[derive(Debug, Clone)]
pub struct ForecastBatcher {
    /// Variables C per step.
    pub channels: usize,
    /// Calendar features F per step ([`Freq::features`]).
    pub features: usize,
}

impl Batcher<ForecastItem, ForecastBatch> for ForecastBatcher {
    fn batch(&self, items: Vec<ForecastItem>, device: &Device) -> ForecastBatch {
        let b = items.len();
        let (c, f) = (self.channels, self.features);
        let (l, h) = items
            .first()
            .map_or((0, 0), |i| (i.x.len() / c.max(1), i.y.len() / c.max(1)));
        let stack = |get: &dyn Fn(&ForecastItem) -> &Vec<f32>, len: usize, width: usize| {
            let v: Vec<f32> = items.iter().flat_map(|i| get(i).iter().copied()).collect();
            Tensor::<3>::from_data(TensorData::new(v, [b, len, width]), device)
        };
        ForecastBatch {
            x: stack(&|i| &i.x, l, c),
            x_mark: stack(&|i| &i.x_mark, l, f),
            y: stack(&|i| &i.y, h, c),
            y_mark: stack(&|i| &i.y_mark, h, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn csv_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_the_ett_layout_and_names_bad_cells() {
        let f =
            csv_file("date,HUFL,OT\n2016-07-01 00:00:00,5.8,30.5\n2016-07-01 01:00:00,5.7,27.8\n");
        let s = read_series_csv(f.path(), Missing::Error).unwrap();
        assert_eq!(s.columns, ["HUFL", "OT"]);
        assert_eq!(s.values, [5.8, 30.5, 5.7, 27.8]);
        assert_eq!(s.dates[1].hour(), 1);
        assert_eq!(s.select(&["OT"]).unwrap().values, [30.5, 27.8]);
        assert!(
            s.select(&["nope"])
                .unwrap_err()
                .to_string()
                .contains("HUFL, OT")
        );
        for (text, want) in [
            (
                "date,a\n2016-07-01,1\n2016-07-02,x\n",
                "line 3: column 'a': 'x' is not a number",
            ),
            (
                "date,a\n2016-07-01,1\nyesterday,2\n",
                "line 3: 'yesterday' is not a date",
            ),
            ("date,a\n2016-07-02,1\n2016-07-01,2\n", "line 3: date"),
            (
                "date,a\n2016-07-01,1\n2016-07-02,\n",
                "line 3: column 'a' is empty",
            ),
            ("date,a\n2016-07-01,1,2\n", "line 2"),
            ("date\n2016-07-01\n", "line 1"),
            ("date,a\n", "no rows"),
        ] {
            let e = read_series_csv(csv_file(text).path(), Missing::Error)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = read_series_csv(Path::new("/no/such.csv"), Missing::Error).unwrap_err();
        assert!(e.to_string().contains("/no/such.csv"));
    }

    #[test]
    fn interpolates_missing_cells_linearly() {
        let f = csv_file(
            "date,a,b\n2000-01-01,,1\n2000-01-02,2,\n2000-01-03,,\n2000-01-04,8,4\n2000-01-05,,\n",
        );
        let s = read_series_csv(f.path(), Missing::Interpolate).unwrap();
        assert_eq!(s.values, [2.0, 1.0, 2.0, 2.0, 5.0, 3.0, 8.0, 4.0, 8.0, 4.0]);
        let f = csv_file("date,a,b\n2000-01-01,,1\n2000-01-02,,2\n");
        let e = read_series_csv(f.path(), Missing::Interpolate).unwrap_err();
        assert!(e.to_string().contains("column 'a' has no value"), "{e}");
        let co2 = read_series_csv(&shipped_series("co2_weekly.csv"), Missing::Interpolate).unwrap();
        assert_eq!((co2.len(), co2.channels()), (2284, 1));
        assert!(read_series_csv(&shipped_series("co2_weekly.csv"), Missing::Error).is_err());
    }

    #[test]
    fn standard_splits_match_the_reference_borders() {
        // ETTh1 has 17,420 rows; the reference borders with seq_len 96.
        let b = split_borders(17_420, 96, SplitScheme::EttHourly).unwrap();
        assert_eq!(b, [(0, 8640), (8544, 11520), (11424, 14400)]);
        let b = split_borders(69_680, 96, SplitScheme::EttMinute).unwrap();
        assert_eq!(b, [(0, 34560), (34464, 46080), (45984, 57600)]);
        // Weather (52,696 rows): int(0.7 n), int(0.2 n), the rest.
        let b = split_borders(52_696, 96, SplitScheme::standard()).unwrap();
        assert_eq!(b, [(0, 36887), (36791, 42157), (42061, 52696)]);
        assert!(split_borders(100, 96, SplitScheme::EttHourly).is_err());
        assert!(split_borders(100, 80, SplitScheme::standard()).is_err());
        assert!(
            split_borders(
                100,
                5,
                SplitScheme::Ratio {
                    train: 0.9,
                    test: 0.2
                }
            )
            .is_err()
        );
    }

    #[test]
    fn the_scaler_uses_the_training_rows_only_and_inverts() {
        let values = [1.0, 10.0, 3.0, 10.0, 100.0, -5.0];
        let s = StandardScaler::fit(&values, 2, (0, 2));
        assert_eq!(s.mean, [2.0, 10.0]);
        assert_eq!(s.std, [1.0, 1.0]); // the constant column gets std 1
        let t = s.transform(&values);
        assert_eq!(t, [-1.0, 0.0, 1.0, 0.0, 98.0, -15.0]);
        let back = s.inverse(Tensor::<2>::from_data(
            TensorData::new(t, [3, 2]),
            &Device::flex(),
        ));
        let back: Vec<f32> = back.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(back, values);
    }

    #[test]
    fn time_features_follow_the_calendar() {
        let d = parse_date("2016-07-01 13:45:00").unwrap(); // a Friday, day 183 of a leap year
        let f = time_features(&[d], Freq::Minute);
        let want = [
            45.0 / 59.0 - 0.5,
            13.0 / 23.0 - 0.5,
            4.0 / 6.0 - 0.5,
            -0.5,
            182.0 / 365.0 - 0.5,
        ];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{f:?}");
        }
        assert_eq!(time_features(&[d], Freq::Hour).len(), 4);
        assert_eq!(time_features(&[d], Freq::Quarter), [6.0 / 11.0 - 0.5]);
        let macro_ = read_series_csv(&shipped_series("macrodata.csv"), Missing::Error).unwrap();
        assert_eq!((macro_.len(), macro_.channels()), (203, 12));
        assert_eq!(Freq::infer(&macro_.dates), Freq::Quarter);
        assert_eq!(Freq::parse("h"), Some(Freq::Hour));
        assert_eq!(Freq::parse("15min"), None);
    }

    #[test]
    fn windows_cover_each_split_and_batch() {
        let dates: Vec<_> = (0..100)
            .map(|i| parse_date("2020-01-01").unwrap() + chrono::Duration::hours(i))
            .collect();
        let values: Vec<f32> = (0..200).map(|i| i as f32).collect();
        let frame = SeriesFrame {
            dates,
            columns: vec!["a".into(), "b".into()],
            values,
        };
        let s = forecast_splits(&frame, SplitScheme::standard(), 8, 4, Freq::Hour).unwrap();
        // Train rows [0, 70): 70 - 8 - 4 + 1 windows; validation [62, 80); test [72, 100).
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (59, 7, 17));
        let item = s.test.get(0).unwrap();
        let un = |v: f32, j: usize| v * s.scaler.std[j] + s.scaler.mean[j];
        assert!((un(item.x[0], 0) - 144.0).abs() < 1e-3); // row 72, column a = 2 * 72
        assert!((un(item.y[0], 0) - 160.0).abs() < 1e-3); // row 80
        assert!(s.test.get(17).is_err());
        let batch = ForecastBatcher {
            channels: 2,
            features: 4,
        }
        .batch(vec![item.clone(), item], &Device::flex());
        assert_eq!(batch.x.dims(), [2, 8, 2]);
        assert_eq!(batch.x_mark.dims(), [2, 8, 4]);
        assert_eq!(batch.y.dims(), [2, 4, 2]);
        assert!(forecast_splits(&frame, SplitScheme::standard(), 0, 4, Freq::Hour).is_err());
        assert!(forecast_splits(&frame, SplitScheme::standard(), 8, 40, Freq::Hour).is_err());
    }
}
