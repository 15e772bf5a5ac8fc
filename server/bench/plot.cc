// The PNG plot of r2serve bench (--plot): latency percentiles and throughput over time, drawn with
// cairo's image surface and toy text API.
#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/bench/bench.h"

namespace r2::server::bench {
namespace {

// 1, 2 or 5 times a power of ten, the smallest such step >= x (x > 0).
double NiceStep(double x) {
  if (!(x > 0) || !std::isfinite(x)) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(x)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= x * (1 - 1e-9)) return m * p;
  }
  return 10 * p;
}

std::string Number(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 100) return absl::StrFormat("%.0f", v);
  if (a >= 10) return absl::StrFormat("%.1f", v);
  if (a >= 1) return absl::StrFormat("%.2f", v);
  return absl::StrFormat("%.3g", v);
}

std::string Tick(double v, double step) {
  // As many decimals as the step needs: 0.25 -> 2, 5 -> 0.
  int decimals = 0;
  if (step < 1) decimals = static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return absl::StrFormat("%.*f", decimals, std::fabs(v) < step * 1e-6 ? 0.0 : v);
}

struct Rgb {
  double r, g, b;
};
constexpr Rgb kInk = {0.12, 0.12, 0.14};
constexpr Rgb kGrid = {0.87, 0.87, 0.89};
constexpr Rgb kMuted = {0.40, 0.40, 0.44};
// Percentile bars, light to dark; throughput lines.
constexpr Rgb kPercentileColors[3] = {{0.62, 0.79, 0.90}, {0.26, 0.55, 0.79}, {0.06, 0.27, 0.52}};
constexpr Rgb kRequestsColor = {0.13, 0.47, 0.71};
constexpr Rgb kTokensColor = {0.90, 0.45, 0.05};

class Canvas {
 public:
  explicit Canvas(cairo_t* cr) : cr_(cr) {}
  void Color(const Rgb& c) { cairo_set_source_rgb(cr_, c.r, c.g, c.b); }
  void Font(double size, bool bold = false) {
    cairo_select_font_face(cr_, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr_, size);
  }
  double TextWidth(const std::string& s) {
    cairo_text_extents_t e;
    cairo_text_extents(cr_, s.c_str(), &e);
    return e.x_advance;
  }
  // align: 0 left, 0.5 centre, 1 right of x; y is the baseline.
  void Text(const std::string& s, double x, double y, double align = 0) {
    cairo_move_to(cr_, x - align * TextWidth(s), y);
    cairo_show_text(cr_, s.c_str());
  }
  // Text turned a quarter counter-clockwise, centred on (x, y).
  void VerticalText(const std::string& s, double x, double y) {
    cairo_save(cr_);
    cairo_translate(cr_, x, y);
    cairo_rotate(cr_, -M_PI / 2);
    Text(s, 0, 0, 0.5);
    cairo_restore(cr_);
  }
  // Shortens s with "..." until it fits max_width.
  std::string Fit(std::string s, double max_width) {
    if (TextWidth(s) <= max_width) return s;
    while (!s.empty() && TextWidth(s + "...") > max_width) s.pop_back();
    return s + "...";
  }
  void Line(double x0, double y0, double x1, double y1, double width) {
    cairo_set_line_width(cr_, width);
    cairo_move_to(cr_, x0, y0);
    cairo_line_to(cr_, x1, y1);
    cairo_stroke(cr_);
  }
  void Rect(double x, double y, double w, double h) {
    cairo_rectangle(cr_, x, y, w, h);
    cairo_fill(cr_);
  }
  cairo_t* cr() { return cr_; }

 private:
  cairo_t* cr_;
};

struct Box {
  double x, y, w, h;  // plot area (inside the axes)
};

// Horizontal grid lines and left-hand (or right-hand) tick labels for [0, top] in `step`s.
void YAxis(Canvas& c, const Box& b, double top, double step, bool right, const Rgb& label_color) {
  c.Font(12);
  for (double v = 0; v <= top * (1 + 1e-9); v += step) {
    const double y = b.y + b.h - v / top * b.h;
    if (!right) {
      c.Color(kGrid);
      c.Line(b.x, y, b.x + b.w, y, 1);
    }
    c.Color(label_color);
    if (right) {
      c.Text(Tick(v, step), b.x + b.w + 6, y + 4, 0);
    } else {
      c.Text(Tick(v, step), b.x - 6, y + 4, 1);
    }
  }
}

// One latency panel: three bars (p50, p90, p99) in ms with their values above them.
void LatencyPanel(Canvas& c, const Box& b, const std::string& title,
                  const std::vector<double>& seconds) {
  c.Color(kInk);
  c.Font(14, true);
  c.Text(title, b.x + b.w / 2, b.y - 12, 0.5);
  double values[3] = {0, 0, 0};
  const double ps[3] = {50, 90, 99};
  for (int i = 0; i < 3; ++i) values[i] = Percentile(seconds, ps[i]) * 1000;
  const double max_v = *std::max_element(values, values + 3);
  const double step = NiceStep(max_v > 0 ? max_v / 4 : 0.25);
  const double top = std::max(step, std::ceil(max_v / step * (1 + 1e-9)) * step);
  YAxis(c, b, top, step, false, kMuted);
  c.Color(kInk);
  c.Line(b.x, b.y + b.h, b.x + b.w, b.y + b.h, 1.5);
  c.Line(b.x, b.y, b.x, b.y + b.h, 1.5);
  if (seconds.empty()) {
    c.Color(kMuted);
    c.Font(12);
    c.Text("no data", b.x + b.w / 2, b.y + b.h / 2, 0.5);
    return;
  }
  const double slot = b.w / 3;
  const double bar_w = slot * 0.6;
  for (int i = 0; i < 3; ++i) {
    const double h = values[i] / top * b.h;
    const double x = b.x + slot * i + (slot - bar_w) / 2;
    c.Color(kPercentileColors[i]);
    c.Rect(x, b.y + b.h - h, bar_w, h);
    c.Color(kInk);
    c.Font(11);
    c.Text(Number(values[i]), x + bar_w / 2, b.y + b.h - h - 4, 0.5);
    c.Font(12);
    c.Text(absl::StrCat("p", static_cast<int>(ps[i])), x + bar_w / 2, b.y + b.h + 16, 0.5);
  }
}

// A step line of per-bucket rates over [0, n * bucket_s] scaled to [0, top].
void StepLine(Canvas& c, const Box& b, const std::vector<double>& rates, double bucket_s,
              double x_top, double top, const Rgb& color) {
  c.Color(color);
  cairo_set_line_width(c.cr(), 2.25);
  cairo_new_path(c.cr());
  for (size_t i = 0; i < rates.size(); ++i) {
    const double x0 = b.x + static_cast<double>(i) * bucket_s / x_top * b.w;
    const double x1 = b.x + static_cast<double>(i + 1) * bucket_s / x_top * b.w;
    const double y = b.y + b.h - rates[i] / top * b.h;
    if (i == 0) {
      cairo_move_to(c.cr(), x0, y);
    } else {
      cairo_line_to(c.cr(), x0, y);
    }
    cairo_line_to(c.cr(), x1, y);
  }
  cairo_stroke(c.cr());
}

// Axis top and step for values up to max_v: about five ticks.
std::pair<double, double> Scale(double max_v) {
  const double step = NiceStep(max_v > 0 ? max_v / 5 : 0.2);
  return {std::max(step, std::ceil(max_v / step * (1 + 1e-9)) * step), step};
}

void ThroughputPanel(Canvas& c, const Box& b, const ThroughputSeries& s) {
  c.Color(kInk);
  c.Font(14, true);
  c.Text(absl::StrCat("Throughput over time (", Number(s.bucket_s), " s buckets)"), b.x, b.y - 12,
         0);
  const double max_req = s.requests_per_s.empty()
                             ? 0
                             : *std::max_element(s.requests_per_s.begin(), s.requests_per_s.end());
  const double max_tok =
      s.output_tokens_per_s.empty()
          ? 0
          : *std::max_element(s.output_tokens_per_s.begin(), s.output_tokens_per_s.end());
  const auto [req_top, req_step] = Scale(max_req);
  const auto [tok_top, tok_step] = Scale(max_tok);
  const double span = static_cast<double>(s.requests_per_s.size()) * s.bucket_s;
  const auto [x_top, x_step] = Scale(span > 0 ? span : 1);
  YAxis(c, b, req_top, req_step, false, kRequestsColor);
  YAxis(c, b, tok_top, tok_step, true, kTokensColor);
  // x ticks
  c.Font(12);
  for (double v = 0; v <= x_top * (1 + 1e-9); v += x_step) {
    const double x = b.x + v / x_top * b.w;
    c.Color(kInk);
    c.Line(x, b.y + b.h, x, b.y + b.h + 4, 1);
    c.Text(Tick(v, x_step), x, b.y + b.h + 18, 0.5);
  }
  c.Color(kInk);
  c.Line(b.x, b.y + b.h, b.x + b.w, b.y + b.h, 1.5);
  c.Line(b.x, b.y, b.x, b.y + b.h, 1.5);
  c.Line(b.x + b.w, b.y, b.x + b.w, b.y + b.h, 1.5);
  c.Font(13);
  c.Text("time since the first request (s)", b.x + b.w / 2, b.y + b.h + 38, 0.5);
  c.Color(kRequestsColor);
  c.VerticalText("requests completed / s", b.x - 56, b.y + b.h / 2);
  c.Color(kTokensColor);
  c.VerticalText("output tokens / s", b.x + b.w + 68, b.y + b.h / 2);
  if (s.requests_per_s.empty()) {
    c.Color(kMuted);
    c.Text("no successful requests", b.x + b.w / 2, b.y + b.h / 2, 0.5);
    return;
  }
  StepLine(c, b, s.output_tokens_per_s, s.bucket_s, x_top, tok_top, kTokensColor);
  StepLine(c, b, s.requests_per_s, s.bucket_s, x_top, req_top, kRequestsColor);
  // Legend above the plot area, right-aligned (not over the lines).
  c.Font(12);
  const std::string labels[2] = {"requests completed / s (left axis)",
                                 "output tokens / s (right axis)"};
  const Rgb colors[2] = {kRequestsColor, kTokensColor};
  double x = b.x + b.w;
  for (int i = 1; i >= 0; --i) {
    x -= c.TextWidth(labels[i]);
    c.Color(kInk);
    c.Text(labels[i], x, b.y - 12, 0);
    x -= 30;
    c.Color(colors[i]);
    c.Line(x, b.y - 16, x + 24, b.y - 16, 2.25);
    x -= 18;
  }
}

}  // namespace

ThroughputSeries ThroughputOverTime(const std::vector<RequestResult>& results, int max_buckets) {
  ThroughputSeries s;
  double t0 = std::numeric_limits<double>::infinity(), t1 = -t0;
  for (const RequestResult& r : results) {
    if (!r.success) continue;
    t0 = std::min(t0, r.start_time);
    t1 = std::max(t1, r.start_time + r.latency);
  }
  if (!std::isfinite(t0)) return s;
  const double span = std::max(t1 - t0, 1e-3);
  s.bucket_s = NiceStep(span / std::max(max_buckets, 1));
  const size_t n = std::max<size_t>(1, static_cast<size_t>(std::ceil(span / s.bucket_s - 1e-9)));
  std::vector<double> requests(n, 0), tokens(n, 0);
  auto bucket = [&](double t) {
    return std::min(n - 1, static_cast<size_t>(std::max(0.0, std::floor(t / s.bucket_s))));
  };
  for (const RequestResult& r : results) {
    if (!r.success) continue;
    requests[bucket(r.start_time - t0 + r.latency)] += 1;
    // Token arrival times as in ComputeMetrics: the first at ttft, one per ITL gap, the rest of
    // output_len at the last chunk.
    double t = r.start_time - t0 + r.ttft;
    int64_t counted = 0;
    if (r.output_len > 0) {
      tokens[bucket(t)] += 1;
      ++counted;
    }
    for (double gap : r.itl) {
      t += gap;
      if (counted < r.output_len) {
        tokens[bucket(t)] += 1;
        ++counted;
      }
    }
    if (counted < r.output_len) tokens[bucket(t)] += static_cast<double>(r.output_len - counted);
  }
  for (size_t i = 0; i < n; ++i) {
    requests[i] /= s.bucket_s;
    tokens[i] /= s.bucket_s;
  }
  s.requests_per_s = std::move(requests);
  s.output_tokens_per_s = std::move(tokens);
  return s;
}

std::string LoadDescription(const BenchOptions& o) {
  std::string load;
  if (o.max_concurrency > 0) absl::StrAppend(&load, "concurrency ", o.max_concurrency, ", ");
  absl::StrAppend(&load, "rate ",
                  o.request_rate > 0 ? absl::StrCat(Number(o.request_rate), " req/s") : "inf");
  if (o.request_rate > 0 && o.burstiness != 1) {
    absl::StrAppend(&load, " (burstiness ", Number(o.burstiness), ")");
  }
  absl::StrAppend(&load, ", ", o.num_prompts, " requests, ");
  if (o.dataset_path.empty()) {
    absl::StrAppend(&load, "random input ", o.random_input_len,
                    o.prompt_kind == PromptKind::kWords ? " words" : "", " / output ",
                    o.random_output_len);
  } else {
    absl::StrAppend(&load, "ShareGPT prompts / output ", o.random_output_len);
  }
  return load;
}

std::string PlotPathBeside(const std::string& result_file) {
  const size_t slash = result_file.find_last_of('/');
  const size_t dot = result_file.find_last_of('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash + 1);
  return (has_ext ? result_file.substr(0, dot) : result_file) + ".png";
}

absl::Status WritePlot(const std::string& path, const std::vector<RequestResult>& results,
                       const BenchMetrics& m, const BenchOptions& o, const std::string& date) {
  const int width = o.plot_width, height = o.plot_height;
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  if (cairo_surface_status(surface) != CAIRO_STATUS_SUCCESS) {
    const std::string why = cairo_status_to_string(cairo_surface_status(surface));
    cairo_surface_destroy(surface);
    return absl::InternalError(
        absl::StrCat("--plot ", path, ": cannot make a ", width, "x", height, " image: ", why));
  }
  cairo_t* cr = cairo_create(surface);
  Canvas c(cr);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);

  // Title: what was measured, against what, and when.
  const double margin = 24;
  c.Color(kInk);
  c.Font(20, true);
  c.Text(c.Fit(absl::StrCat("r2serve bench: ", o.model.empty() ? "(model unknown)" : o.model,
                            " at ", o.base_url, o.endpoint),
               width - 2 * margin),
         margin, 34);
  c.Font(14);
  c.Color(kMuted);
  c.Text(c.Fit(absl::StrCat(LoadDescription(o), "; ", m.completed, " ok, ", m.failed, " failed; ",
                            date),
               width - 2 * margin),
         margin, 58);
  c.Text(c.Fit(absl::StrFormat("%.2f req/s, %.1f output tok/s over %.2f s", m.request_throughput,
                               m.output_throughput, m.duration),
               width - 2 * margin),
         margin, 78);

  // Latency panels across the top half.
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestResult& r : results) {
    if (!r.success) continue;
    ttft.push_back(r.ttft);
    if (r.output_len > 1) tpot.push_back(Tpot(r));
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
    e2el.push_back(r.latency);
  }
  const double top_y = 130, left = 78, right_pad = 96;
  const double panels_h = (height - top_y) * 0.42;
  const double gap = 64;
  const double panel_w = (width - left - margin - 3 * gap) / 4;
  const struct {
    const char* title;
    const std::vector<double>* v;
  } panels[4] = {
      {"TTFT (ms)", &ttft}, {"TPOT (ms)", &tpot}, {"ITL (ms)", &itl}, {"E2E latency (ms)", &e2el}};
  for (int i = 0; i < 4; ++i) {
    LatencyPanel(c, Box{left + i * (panel_w + gap), top_y, panel_w, panels_h}, panels[i].title,
                 *panels[i].v);
  }
  // Throughput over time across the bottom.
  const double th_y = top_y + panels_h + 84;
  const Box th{left, th_y, width - left - right_pad, height - th_y - 56};
  ThroughputPanel(c, th, ThroughputOverTime(results, 30));

  cairo_destroy(cr);
  cairo_surface_flush(surface);
  const cairo_status_t written = cairo_surface_write_to_png(surface, path.c_str());
  cairo_surface_destroy(surface);
  if (written != CAIRO_STATUS_SUCCESS) {
    return absl::UnavailableError(
        absl::StrCat("--plot ", path, ": cannot write: ", cairo_status_to_string(written)));
  }
  return absl::OkStatus();
}

}  // namespace r2::server::bench
