//! The training curves as an SVG (plotters): train and eval loss against
//! the step on top, the learning rate below.

use std::path::Path;

use plotters::prelude::*;

/// Reads `metrics.jsonl` and draws `svg`.
pub fn plot_metrics(metrics: &Path, svg: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(metrics).map_err(|e| format!("{}: {e}", metrics.display()))?;
    let (mut train, mut eval, mut lr) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        match v["type"].as_str() {
            Some("train") => {
                if let Some(l) = v["loss"].as_f64() {
                    train.push((step, l));
                }
                if let Some(x) = v["lr"].as_f64() {
                    lr.push((step, x));
                }
            }
            Some("eval") => {
                if let Some(l) = v["eval_loss"].as_f64() {
                    eval.push((step, l));
                }
            }
            _ => {}
        }
    }
    if train.is_empty() && eval.is_empty() {
        return Err("no metrics to plot".into());
    }
    let max_step = train
        .iter()
        .chain(&eval)
        .map(|p| p.0)
        .fold(1.0f64, f64::max);
    let losses = train.iter().chain(&eval).map(|p| p.1);
    let (lo, hi) = losses.fold((f64::MAX, f64::MIN), |(a, b), l| (a.min(l), b.max(l)));
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let tmp = svg.with_extension("svg.ft-tmp-plot");
    {
        let root = SVGBackend::new(&tmp, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(420);
        let mut chart = ChartBuilder::on(&top)
            .caption("loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max_step, (lo - pad)..(hi + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(train.iter().copied(), &BLUE))
            .map_err(|e| e.to_string())?
            .label("train loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if !eval.is_empty() {
            chart
                .draw_series(LineSeries::new(eval.iter().copied(), &RED))
                .map_err(|e| e.to_string())?
                .label("eval loss")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart
                .draw_series(eval.iter().map(|&p| Circle::new(p, 3, RED.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        let lr_max = lr.iter().map(|p| p.1).fold(1e-12f64, f64::max);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("learning rate", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max_step, 0f64..lr_max * 1.05)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(lr.iter().copied(), &GREEN))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, svg).map_err(|e| format!("{}: {e}", svg.display()))
}
