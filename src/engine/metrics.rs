//! Quality measures for `chatguard eval` and `chatguard train`.

use serde::Serialize;

/// Area under the ROC curve (ties count half). `None` when one class is absent.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|l| **l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Mann–Whitney U with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in &order[i..=j] {
            if labels[*k] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// Area under the precision–recall curve as average precision (the step-wise sum used by
/// scikit-learn's `average_precision_score`; tied scores form one step).
pub fn auprc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|l| **l).count();
    if pos == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for k in &order[i..=j] {
            if labels[*k] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        let recall = tp as f64 / pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

/// Counts at one threshold (score ≥ threshold counts as flagged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AtThreshold {
    pub threshold: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Share of negatives flagged.
    pub false_flag_rate: Option<f64>,
}

pub fn at_threshold(scores: &[f64], labels: &[bool], threshold: f64) -> AtThreshold {
    let (mut tp, mut fp, mut pos, mut neg) = (0usize, 0usize, 0usize, 0usize);
    for (s, l) in scores.iter().zip(labels) {
        let flagged = *s >= threshold;
        match (l, flagged) {
            (true, true) => {
                tp += 1;
                pos += 1
            }
            (true, false) => pos += 1,
            (false, true) => {
                fp += 1;
                neg += 1
            }
            (false, false) => neg += 1,
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    AtThreshold {
        threshold,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, pos),
        false_flag_rate: ratio(fp, neg),
    }
}

/// Everything `eval` prints for one category.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    pub auprc: Option<f64>,
    pub flag: AtThreshold,
    pub block: AtThreshold,
}

pub fn report(scores: &[f64], labels: &[bool], flag: f64, block: f64) -> Report {
    Report {
        rows: labels.len(),
        positives: labels.iter().filter(|l| **l).count(),
        roc_auc: roc_auc(scores, labels),
        auprc: auprc(scores, labels),
        flag: at_threshold(scores, labels, flag),
        block: at_threshold(scores, labels, block),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        // sklearn.metrics.roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) == 0.75
        assert!((roc_auc(&s, &l).unwrap() - 0.75).abs() < 1e-12);
        // average_precision_score(...) == 0.8333…
        assert!((auprc(&s, &l).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.5], &[true]), None);
    }

    #[test]
    fn threshold_counts() {
        let r = at_threshold(&[0.9, 0.7, 0.2, 0.65], &[true, false, true, false], 0.6);
        assert_eq!(r.precision, Some(1.0 / 3.0));
        assert_eq!(r.recall, Some(0.5));
        assert_eq!(r.false_flag_rate, Some(1.0));
    }
}
