// fine_tune: loads a LeNet-5 checkpoint, fine-tunes it on a few new labelled images, predicts,
// and saves the result. It uses only the generated lenet5_trainer.h and Kiln's trainer API, with
// its own reader for the images (IDX files, gzip-compressed or not).
//
//   fine_tune --checkpoint lenet5.safetensors --output tuned.safetensors
//             [--data /usr/share/datasets/fashion-mnist] [--new 64] [--epochs 5] [--lr 0.005]
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lenet5_trainer.h"

namespace {

const char* const kClassNames[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

struct Samples {
  std::vector<float> images;  // count x 28 x 28, in [0, 1]
  std::vector<int32_t> labels;
  int count = 0;
};

// Reads `count` bytes after a header of `header` bytes; gzread reads plain files as well.
bool ReadIdx(const std::string& path, size_t header, size_t count, std::vector<uint8_t>* bytes,
             std::string* error) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    *error = "cannot open '" + path + "'; pass --data with the directory of the IDX files";
    return false;
  }
  bytes->resize(header + count);
  const int read = gzread(file, bytes->data(), static_cast<unsigned>(bytes->size()));
  gzclose(file);
  if (read != static_cast<int>(bytes->size())) {
    *error = "'" + path + "' holds fewer than the " + std::to_string(header + count) +
             " bytes needed; is it a complete IDX file?";
    return false;
  }
  bytes->erase(bytes->begin(), bytes->begin() + header);
  return true;
}

// Samples [first, first + count) of Fashion-MNIST's test split: images the checkpoint never
// trained on.
bool LoadTestSamples(const std::string& dir, int first, int count, Samples* out,
                     std::string* error) {
  std::vector<uint8_t> pixels, labels;
  const size_t image_size = 28 * 28;
  if (!ReadIdx(dir + "/t10k-images-idx3-ubyte.gz", 16, (first + count) * image_size, &pixels,
               error) ||
      !ReadIdx(dir + "/t10k-labels-idx1-ubyte.gz", 8, first + count, &labels, error)) {
    return false;
  }
  out->count = count;
  out->images.resize(count * image_size);
  for (size_t i = 0; i < out->images.size(); ++i) {
    out->images[i] = pixels[first * image_size + i] / 255.0f;
  }
  out->labels.assign(labels.begin() + first, labels.end());
  return true;
}

// Fraction of `samples` whose top-1 prediction is their label.
double Accuracy(kiln::Trainer& trainer, const Samples& samples, std::vector<float>* logits) {
  logits->resize(samples.count * trainer.output_size());
  kiln::Status s = trainer.Predict(samples.images.data(), samples.count, logits->data());
  if (!s.ok()) {
    std::fprintf(stderr, "fine_tune: %s\n", s.message().c_str());
    std::exit(1);
  }
  int correct = 0;
  for (int i = 0; i < samples.count; ++i) {
    const float* row = logits->data() + i * trainer.output_size();
    int best = 0;
    for (int c = 1; c < trainer.output_size(); ++c) best = row[c] > row[best] ? c : best;
    correct += best == samples.labels[i];
  }
  return static_cast<double>(correct) / samples.count;
}

int Fail(const kiln::Status& status) {
  std::fprintf(stderr, "fine_tune: %s\n", status.message().c_str());
  return 1;
}

}  // namespace

// Parses `text`, all of it, as a finite number.
bool ParseNumber(const char* text, double* value) {
  char* end = nullptr;
  *value = std::strtod(text, &end);
  return end != text && *end == '\0' && std::isfinite(*value);
}

int main(int argc, char** argv) {
  std::string checkpoint, output, data = "/usr/share/datasets/fashion-mnist";
  double new_images = 64, epochs = 5, lr = 0.005;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (value == nullptr) {
      std::fprintf(stderr, "fine_tune: %s needs a value\n", flag.c_str());
      return 2;
    }
    bool valid = true;
    if (flag == "--checkpoint") {
      checkpoint = value;
    } else if (flag == "--output") {
      output = value;
    } else if (flag == "--data") {
      data = value;
    } else if (flag == "--new") {
      valid = ParseNumber(value, &new_images) && new_images == std::floor(new_images) &&
              new_images >= 1 && new_images <= 5000;
    } else if (flag == "--epochs") {
      valid = ParseNumber(value, &epochs) && epochs == std::floor(epochs) && epochs >= 1;
    } else if (flag == "--lr") {
      valid = ParseNumber(value, &lr) && lr > 0;
    } else {
      std::fprintf(stderr, "fine_tune: unknown flag %s\n", flag.c_str());
      return 2;
    }
    if (!valid) {
      std::fprintf(stderr, "fine_tune: %s '%s' is invalid; --new takes 1 to 5000 images, "
                           "--epochs a whole number from 1, --lr a positive number\n",
                   flag.c_str(), value);
      return 2;
    }
  }
  if (checkpoint.empty() || output.empty()) {
    std::fprintf(stderr, "usage: fine_tune --checkpoint IN --output OUT [--data DIR] "
                         "[--new 1..5000] [--epochs N] [--lr RATE]\n");
    return 2;
  }

  // A bad output path fails now rather than after the training.
  const std::string probe = output + ".probe";
  std::FILE* file = std::fopen(probe.c_str(), "wb");
  if (file == nullptr) {
    std::fprintf(stderr, "fine_tune: cannot write next to '%s': %s; choose another --output\n",
                 output.c_str(), std::strerror(errno));
    return 1;
  }
  std::fclose(file);
  std::remove(probe.c_str());

  kiln::models::Lenet5Trainer trainer;
  kiln::Status status = trainer.LoadCheckpoint(checkpoint);
  if (!status.ok()) return Fail(status);

  // The new labelled images, and 1,000 held-out ones from the second half of the test split.
  Samples fresh, held_out;
  std::string error;
  if (!LoadTestSamples(data, 0, static_cast<int>(new_images), &fresh, &error) ||
      !LoadTestSamples(data, 5000, 1000, &held_out, &error)) {
    std::fprintf(stderr, "fine_tune: %s\n", error.c_str());
    return 1;
  }
  std::vector<float> logits;
  std::printf("loaded %s: accuracy %.3f on the %d new images, %.3f on 1000 held-out ones\n",
              checkpoint.c_str(), Accuracy(trainer, fresh, &logits),
              fresh.count, Accuracy(trainer, held_out, &logits));

  // Fine-tuning: a small learning rate, a few passes over the new images in batches of 16.
  kiln::Hyperparameters h;
  h.lr = static_cast<float>(lr);
  h.momentum = 0.9f;
  status = trainer.SetHyperparameters(h);
  if (!status.ok()) return Fail(status);
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    double loss = 0;
    int batches = 0;
    for (int first = 0; first < fresh.count; first += 16) {
      const int batch = std::min(16, fresh.count - first);
      kiln::StepResult step;
      status = trainer.TrainStep(fresh.images.data() + first * trainer.input_size(),
                                 fresh.labels.data() + first, batch, &step);
      if (!status.ok()) return Fail(status);
      loss += step.loss;
      ++batches;
    }
    std::printf("epoch %d: loss %.4f\n", epoch, loss / batches);
  }

  std::printf("fine-tuned: accuracy %.3f on the new images, %.3f on the held-out ones\n",
              Accuracy(trainer, fresh, &logits), Accuracy(trainer, held_out, &logits));
  Accuracy(trainer, fresh, &logits);
  for (int i = 0; i < std::min(5, fresh.count); ++i) {
    const float* row = logits.data() + i * trainer.output_size();
    int best = 0;
    for (int c = 1; c < trainer.output_size(); ++c) best = row[c] > row[best] ? c : best;
    std::printf("image %d: predicted %s, labelled %s\n", i, kClassNames[best],
                kClassNames[fresh.labels[i]]);
  }

  status = trainer.SaveCheckpoint(output);
  if (!status.ok()) return Fail(status);
  std::printf("saved %s\n", output.c_str());
  return 0;
}
