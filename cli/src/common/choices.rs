//! The closed sets of choices on the command line (and in `zoo.json`), as [`ValueEnum`]s: clap
//! refuses any other value with its list (printed on one line by `main`), and each maps onto the
//! library's own type.

use clap::ValueEnum;
use ssm_datasets::timeseries::{Freq, Missing, SplitScheme};

/// The name a choice is spelled with on the command line and in `zoo.json`.
pub fn name_of<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// `a, b or c`: the names of every choice of `T`.
pub fn names<T: ValueEnum>() -> String {
    one_of(
        &T::value_variants()
            .iter()
            .map(name_of)
            .collect::<Vec<String>>(),
    )
}

/// `a, b or c`.
pub fn one_of(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The language-model architectures (`zoo train lm`, `zoo bench lm`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Mamba,
    Mamba2,
    /// Mamba-3 (SISO).
    Mamba3,
}

/// How a forecasting series is cut into training, validation and test splits (`--split`).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// ETTh*/ETTm* file names: 12/4/4 months; otherwise 70/10/20.
    #[default]
    Auto,
    /// ETT's hourly split: 12/4/4 months of hours.
    EttHourly,
    /// ETT's 15-minute split: 12/4/4 months of quarter hours.
    EttMinute,
    /// 70/10/20 of the rows.
    Ratio,
}

impl Split {
    /// The scheme for the series in file `name`.
    pub fn scheme(self, name: &str) -> SplitScheme {
        match self {
            Split::Auto if name.starts_with("ETTh") => SplitScheme::EttHourly,
            Split::Auto if name.starts_with("ETTm") => SplitScheme::EttMinute,
            Split::Auto | Split::Ratio => SplitScheme::standard(),
            Split::EttHourly => SplitScheme::EttHourly,
            Split::EttMinute => SplitScheme::EttMinute,
        }
    }
}

/// What to do with empty cells of a series (`--missing`).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingCells {
    /// Interpolate linearly in time.
    #[default]
    Interpolate,
    /// Refuse the file.
    Error,
}

impl From<MissingCells> for Missing {
    fn from(m: MissingCells) -> Self {
        match m {
            MissingCells::Interpolate => Missing::Interpolate,
            MissingCells::Error => Missing::Error,
        }
    }
}

/// The sampling frequency of a series, for its calendar features (`--freq`; case-insensitive,
/// with pandas' longer spellings as aliases).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frequency {
    /// Inferred from the median gap between dates.
    #[default]
    Auto,
    #[value(alias = "min", alias = "minute")]
    T,
    #[value(alias = "hour")]
    H,
    #[value(alias = "b", alias = "day")]
    D,
    #[value(alias = "week")]
    W,
    #[value(alias = "month")]
    M,
    #[value(alias = "quarter")]
    Q,
    #[value(alias = "a", alias = "year")]
    Y,
}

impl Frequency {
    /// The frequency named, or `None` for `auto` (inferred from the dates by [`Freq::infer`]).
    pub fn named(self) -> Option<Freq> {
        Some(match self {
            Frequency::Auto => return None,
            Frequency::T => Freq::Minute,
            Frequency::H => Freq::Hour,
            Frequency::D => Freq::Day,
            Frequency::W => Freq::Week,
            Frequency::M => Freq::Month,
            Frequency::Q => Freq::Quarter,
            Frequency::Y => Freq::Year,
        })
    }
}

/// Graph-Mamba's data (`zoo train graph-mamba --data`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphData {
    /// Node classification on a stochastic block model.
    Sbm,
    /// The karate club's two factions from two labelled nodes.
    Karate,
    /// Graph classification on a TU data set (give --tu-dir and --tu-name).
    Tu,
}

/// The models `zoo bench compare` compares (case-insensitive).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareModel {
    Mamba,
    Mamba2,
    Transformer,
    /// In the inference comparison only.
    S4d,
}

impl CompareModel {
    /// The name in the table and the JSON.
    pub fn label(self) -> &'static str {
        match self {
            CompareModel::Mamba => "Mamba",
            CompareModel::Mamba2 => "Mamba2",
            CompareModel::Transformer => "Transformer",
            CompareModel::S4d => "S4D",
        }
    }
}

/// The model kinds of a `zoo train` run folder, named in its `zoo.json`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// An S4D or S5 sequence classifier (`s4d-digits`, `s5-digits`).
    Sequence,
    Vim,
    Vmamba,
    S4nd,
    SMamba,
    TimeMachine,
    GraphMamba,
}

impl ModelKind {
    /// The kind named `name` in a `zoo.json` (exactly as written there).
    pub fn parse(name: &str) -> Option<Self> {
        <Self as ValueEnum>::from_str(name, false).ok()
    }

    /// Its name in `zoo.json`, `runs/<name>...` and the messages.
    pub fn name(self) -> String {
        name_of(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings written into `zoo.json` by earlier runs still read.
    #[test]
    fn names_are_the_run_files_spellings() {
        let kinds: Vec<String> = ModelKind::value_variants().iter().map(name_of).collect();
        assert_eq!(
            kinds,
            [
                "sequence",
                "vim",
                "vmamba",
                "s4nd",
                "s-mamba",
                "time-machine",
                "graph-mamba"
            ]
        );
        assert_eq!(names::<Split>(), "auto, ett-hourly, ett-minute or ratio");
        assert_eq!(names::<Frequency>(), "auto, t, h, d, w, m, q or y");
        assert_eq!(names::<MissingCells>(), "interpolate or error");
        assert_eq!(names::<GraphData>(), "sbm, karate or tu");
        for (alias, freq) in [
            ("H", Freq::Hour),
            ("minute", Freq::Minute),
            ("A", Freq::Year),
        ] {
            let f = <Frequency as ValueEnum>::from_str(alias, true).unwrap();
            assert_eq!(f.named(), Some(freq));
        }
    }
}
