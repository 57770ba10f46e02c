//! Graph data: edge lists and node tables (the shipped karate club), the TU graph-classification
//! format, and a stochastic-block-model generator for node classification.
//!
//! Graphs are held as [`Graph`]: node features (N, F) row-major, undirected edges listed once,
//! and labels per node or per graph.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// What went wrong reading a graph file; each names the file and line.
pub type GraphError = crate::error::DataFileError;

/// One graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Node count N.
    pub nodes: usize,
    /// Node features, (nodes, features) row-major.
    pub x: Vec<f32>,
    /// Features per node F.
    pub features: usize,
    /// Undirected edges, each listed once.
    pub edges: Vec<(usize, usize)>,
    /// Node labels (node tasks), if any.
    pub node_labels: Option<Vec<usize>>,
    /// The graph's label (graph tasks), if any.
    pub label: Option<usize>,
}

impl Graph {
    /// Both directions of every edge, as (sources, targets).
    pub fn directed(&self) -> (Vec<usize>, Vec<usize>) {
        let mut src = Vec::with_capacity(2 * self.edges.len());
        let mut dst = Vec::with_capacity(2 * self.edges.len());
        for &(a, b) in &self.edges {
            src.extend([a, b]);
            dst.extend([b, a]);
        }
        (src, dst)
    }

    /// Degree of each node.
    pub fn degrees(&self) -> Vec<usize> {
        let mut d = vec![0; self.nodes];
        for &(a, b) in &self.edges {
            d[a] += 1;
            d[b] += 1;
        }
        d
    }
}

fn read_lines(path: &Path) -> Result<Vec<(usize, String)>, GraphError> {
    let text = std::fs::read_to_string(path).map_err(|source| GraphError::Io {
        path: path.into(),
        source,
    })?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect())
}

/// Parses whitespace- or comma-separated integers of one line.
fn ints(path: &Path, line: usize, text: &str, want: usize) -> Result<Vec<usize>, GraphError> {
    let v: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect();
    if v.len() != want {
        return Err(GraphError::Parse {
            path: path.into(),
            line,
            message: format!("expected {want} integers, found '{text}'"),
        });
    }
    v.iter()
        .map(|s| {
            s.parse::<usize>().map_err(|_| GraphError::Parse {
                path: path.into(),
                line,
                message: format!("'{s}' is not a non-negative integer"),
            })
        })
        .collect()
}

/// The most nodes [`read_edge_list`] gives one-hot identity features (nodes² floats: 400 MB).
pub const MAX_IDENTITY_NODES: usize = 10_000;

/// The most one-hot node-label features [`read_tu`] builds (nodes x classes floats: 1 GB).
pub const MAX_ONE_HOT_VALUES: usize = 1 << 28;

/// Reads an edge list (`u v` per line, 0-based, `#` comments) and a node table (`node label`
/// per line) into one graph; nodes get a one-hot identity feature (no attributes in the files).
pub fn read_edge_list(edges: &Path, labels: &Path) -> Result<Graph, GraphError> {
    let mut node_labels: Vec<Option<usize>> = Vec::new();
    let table = read_lines(labels)?;
    let rows = table.len();
    for (line, text) in table {
        let v = ints(labels, line, &text, 2)?;
        // Every node below the largest id needs a line of its own: an id past the line count
        // is an error before anything is sized by it.
        if v[0] >= rows {
            return Err(GraphError::Parse {
                path: labels.into(),
                line,
                message: format!(
                    "node {} in a table of {rows} nodes (ids are 0..{rows}, one line each)",
                    v[0]
                ),
            });
        }
        if v[0] >= node_labels.len() {
            node_labels.resize(v[0] + 1, None);
        }
        node_labels[v[0]] = Some(v[1]);
    }
    let nodes = node_labels.len();
    let labels_all: Vec<usize> = node_labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.ok_or_else(|| {
                GraphError::Invalid(format!("{}: node {i} has no label", labels.display()))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut list = Vec::new();
    for (line, text) in read_lines(edges)? {
        let v = ints(edges, line, &text, 2)?;
        if v[0] >= nodes || v[1] >= nodes {
            return Err(GraphError::Parse {
                path: edges.into(),
                line,
                message: format!("edge {} {} names a node outside 0..{nodes}", v[0], v[1]),
            });
        }
        list.push((v[0], v[1]));
    }
    if nodes > MAX_IDENTITY_NODES {
        return Err(GraphError::Invalid(format!(
            "{}: {nodes} nodes; the one-hot identity features of an edge list hold nodes² \
             values, allowed up to {MAX_IDENTITY_NODES} nodes",
            labels.display()
        )));
    }
    let mut x = vec![0f32; nodes * nodes];
    for i in 0..nodes {
        x[i * nodes + i] = 1.0;
    }
    Ok(Graph {
        nodes,
        x,
        features: nodes,
        edges: list,
        node_labels: Some(labels_all),
        label: None,
    })
}

/// The shipped karate club (34 nodes, 78 edges, 2 factions).
pub fn karate_club() -> Result<Graph, GraphError> {
    read_edge_list(
        &crate::shipped::shipped_data("karate_club.edges"),
        &crate::shipped::shipped_data("karate_club.labels"),
    )
}

/// A stochastic block model: `blocks` communities of `size` nodes, edges inside a block with
/// probability `p_in` and across with `p_out`; each node's label is its block and its features
/// are its block's one-hot plus Gaussian noise of scale `noise` (so structure must help).
pub fn stochastic_block_model(
    blocks: usize,
    size: usize,
    p_in: f64,
    p_out: f64,
    noise: f32,
    seed: u64,
) -> Graph {
    let mut rng = StdRng::seed_from_u64(seed);
    let nodes = blocks * size;
    let label: Vec<usize> = (0..nodes).map(|i| i / size).collect();
    let mut edges = Vec::new();
    for a in 0..nodes {
        for b in a + 1..nodes {
            let p = if label[a] == label[b] { p_in } else { p_out };
            if rng.random_bool(p.clamp(0.0, 1.0)) {
                edges.push((a, b));
            }
        }
    }
    let mut x = vec![0f32; nodes * blocks];
    for i in 0..nodes {
        for k in 0..blocks {
            // Box-Muller normal noise.
            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
            x[i * blocks + k] = f32::from(u8::from(label[i] == k)) + noise * z;
        }
    }
    Graph {
        nodes,
        x,
        features: blocks,
        edges,
        node_labels: Some(label),
        label: None,
    }
}

/// Reads a TU graph-classification data set (`DS_A.txt`, `DS_graph_indicator.txt`,
/// `DS_graph_labels.txt`, and optionally `DS_node_labels.txt` (one-hot features) or
/// `DS_node_attributes.txt`) from `dir` with prefix `name`. Node ids are 1-based as in the
/// format; graph labels are remapped to 0..classes in sorted order.
pub fn read_tu(dir: &Path, name: &str) -> Result<Vec<Graph>, GraphError> {
    let file = |s: &str| dir.join(format!("{name}_{s}.txt"));
    let indicator: Vec<usize> = read_lines(&file("graph_indicator"))?
        .into_iter()
        .map(|(l, t)| ints(&file("graph_indicator"), l, &t, 1).map(|v| v[0]))
        .collect::<Result<_, _>>()?;
    let n = indicator.len();
    if indicator.first() != Some(&1) || indicator.windows(2).any(|w| w[1] < w[0] || w[1] > w[0] + 1)
    {
        return Err(GraphError::Invalid(format!(
            "{}: graph ids must start at 1 and be non-decreasing without gaps",
            file("graph_indicator").display()
        )));
    }
    let graphs = *indicator.last().unwrap_or(&0);
    let raw_labels: Vec<i64> = read_lines(&file("graph_labels"))?
        .into_iter()
        .map(|(l, t)| {
            t.trim().parse::<i64>().map_err(|_| GraphError::Parse {
                path: file("graph_labels"),
                line: l,
                message: format!("'{t}' is not an integer label"),
            })
        })
        .collect::<Result<_, _>>()?;
    if raw_labels.len() != graphs {
        return Err(GraphError::Invalid(format!(
            "{}: {} labels for {graphs} graphs",
            file("graph_labels").display(),
            raw_labels.len()
        )));
    }
    let mut classes: Vec<i64> = raw_labels.clone();
    classes.sort_unstable();
    classes.dedup();
    // Node features: attributes, else one-hot node labels, else a constant.
    let (features, x): (usize, Vec<f32>) = if file("node_attributes").is_file() {
        let rows = read_lines(&file("node_attributes"))?;
        let parsed: Vec<Vec<f32>> = rows
            .iter()
            .map(|(l, t)| {
                t.split(',')
                    .map(|s| s.trim().parse::<f32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| GraphError::Parse {
                        path: file("node_attributes"),
                        line: *l,
                        message: format!("'{t}' is not a row of numbers"),
                    })
            })
            .collect::<Result<_, _>>()?;
        let f = parsed.first().map_or(0, Vec::len);
        if parsed.len() != n || parsed.iter().any(|r| r.len() != f) {
            return Err(GraphError::Invalid(format!(
                "{}: expected {n} rows of {f} attributes",
                file("node_attributes").display()
            )));
        }
        (f, parsed.concat())
    } else if file("node_labels").is_file() {
        let labels: Vec<usize> = read_lines(&file("node_labels"))?
            .into_iter()
            .map(|(l, t)| ints(&file("node_labels"), l, &t, 1).map(|v| v[0]))
            .collect::<Result<_, _>>()?;
        if labels.len() != n {
            return Err(GraphError::Invalid(format!(
                "{}: {} labels for {n} nodes",
                file("node_labels").display(),
                labels.len()
            )));
        }
        let f = labels.iter().max().map_or(1, |m| m.saturating_add(1));
        if n.checked_mul(f).is_none_or(|v| v > MAX_ONE_HOT_VALUES) {
            return Err(GraphError::Invalid(format!(
                "{}: node label {} makes one-hot features of {n} x {f} values, allowed up to \
                 {MAX_ONE_HOT_VALUES}",
                file("node_labels").display(),
                f - 1
            )));
        }
        let mut x = vec![0f32; n * f];
        for (i, &l) in labels.iter().enumerate() {
            x[i * f + l] = 1.0;
        }
        (f, x)
    } else {
        (1, vec![1.0; n])
    };
    // Each graph's first node id (0-based) and size.
    let mut start = vec![0usize; graphs + 1];
    for &g in &indicator {
        start[g] += 1;
    }
    for g in 1..=graphs {
        start[g] += start[g - 1];
    }
    let mut out: Vec<Graph> = (0..graphs)
        .map(|g| Graph {
            nodes: start[g + 1] - start[g],
            x: x[start[g] * features..start[g + 1] * features].to_vec(),
            features,
            edges: Vec::new(),
            node_labels: None,
            label: Some(classes.binary_search(&raw_labels[g]).expect("label seen")),
        })
        .collect();
    for (line, text) in read_lines(&file("A"))? {
        let v = ints(&file("A"), line, &text, 2)?;
        let (a, b) = (v[0], v[1]);
        if a == 0 || b == 0 || a > n || b > n || indicator[a - 1] != indicator[b - 1] {
            return Err(GraphError::Parse {
                path: file("A"),
                line,
                message: format!("edge {a}, {b}: nodes must be 1..={n} and in one graph"),
            });
        }
        let g = indicator[a - 1] - 1;
        // The format lists both directions; keep each undirected edge once.
        if a < b {
            out[g].edges.push((a - 1 - start[g], b - 1 - start[g]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_karate_club_has_34_nodes_78_edges_and_two_factions() {
        let g = karate_club().unwrap();
        assert_eq!((g.nodes, g.edges.len()), (34, 78));
        let labels = g.node_labels.as_ref().unwrap();
        assert_eq!(labels.iter().filter(|&&l| l == 0).count(), 17);
        assert_eq!(g.degrees()[0], 16);
        assert_eq!(g.degrees()[33], 17);
        let (src, dst) = g.directed();
        assert_eq!((src.len(), dst.len()), (156, 156));
    }

    #[test]
    fn edge_list_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let (e, l) = (dir.path().join("g.edges"), dir.path().join("g.labels"));
        std::fs::write(&l, "0 0\n1 1\n").unwrap();
        std::fs::write(&e, "# c\n0 1\n0 5\n").unwrap();
        let err = read_edge_list(&e, &l).unwrap_err().to_string();
        assert!(
            err.contains("g.edges, line 3") && err.contains("outside"),
            "{err}"
        );
        std::fs::write(&e, "0 x\n").unwrap();
        assert!(
            read_edge_list(&e, &l)
                .unwrap_err()
                .to_string()
                .contains("'x'")
        );
    }

    /// Sizes come from the files' numbers: a node id far past the table is refused before
    /// anything is sized by it, and so are identity features too large to hold.
    #[test]
    fn huge_node_ids_and_graphs_are_errors_not_allocations() {
        let dir = tempfile::tempdir().unwrap();
        let (e, l) = (dir.path().join("g.edges"), dir.path().join("g.labels"));
        std::fs::write(&e, "0 1\n").unwrap();
        std::fs::write(&l, "0 0\n99999999999 1\n").unwrap();
        let err = read_edge_list(&e, &l).unwrap_err().to_string();
        assert!(
            err.contains("g.labels, line 2") && err.contains("node 99999999999"),
            "{err}"
        );
        let big: String = (0..=MAX_IDENTITY_NODES)
            .map(|i| format!("{i} 0\n"))
            .collect();
        std::fs::write(&l, big).unwrap();
        let err = read_edge_list(&e, &l).unwrap_err().to_string();
        assert!(err.contains("one-hot identity features"), "{err}");
    }

    #[test]
    fn block_models_are_denser_inside_blocks() {
        let g = stochastic_block_model(3, 20, 0.5, 0.02, 0.5, 1);
        let labels = g.node_labels.as_ref().unwrap();
        let inside = g
            .edges
            .iter()
            .filter(|(a, b)| labels[*a] == labels[*b])
            .count();
        let across = g.edges.len() - inside;
        // Expected 3 * C(20, 2) * 0.5 = 285 inside, 1200 * 0.02 = 24 across.
        assert!(
            (200..370).contains(&inside) && across < 60,
            "{inside} / {across}"
        );
        assert_eq!(g, stochastic_block_model(3, 20, 0.5, 0.02, 0.5, 1));
    }

    #[test]
    fn tu_files_read_into_graphs() {
        let dir = tempfile::tempdir().unwrap();
        let w =
            |s: &str, t: &str| std::fs::write(dir.path().join(format!("T_{s}.txt")), t).unwrap();
        // Graph 1: nodes 1-3 (a path), graph 2: nodes 4-5 (an edge).
        w("A", "1, 2\n2, 1\n2, 3\n3, 2\n4, 5\n5, 4\n");
        w("graph_indicator", "1\n1\n1\n2\n2\n");
        w("graph_labels", "-1\n1\n");
        w("node_labels", "0\n2\n1\n0\n0\n");
        let gs = read_tu(dir.path(), "T").unwrap();
        assert_eq!(gs.len(), 2);
        assert_eq!(
            (gs[0].nodes, gs[0].edges.clone()),
            (3, vec![(0, 1), (1, 2)])
        );
        assert_eq!((gs[1].nodes, gs[1].edges.clone()), (2, vec![(0, 1)]));
        assert_eq!((gs[0].label, gs[1].label), (Some(0), Some(1)));
        assert_eq!(gs[0].features, 3);
        assert_eq!(&gs[0].x[3..6], &[0.0, 0.0, 1.0]);
        w("A", "1, 4\n");
        let e = read_tu(dir.path(), "T").unwrap_err().to_string();
        assert!(e.contains("T_A.txt, line 1"), "{e}");
        w("graph_labels", "1\n");
        assert!(
            read_tu(dir.path(), "T")
                .unwrap_err()
                .to_string()
                .contains("1 labels for 2 graphs")
        );
    }
}
