// A thin, checked wrapper over the HDF5 C API: just what checkpoints need. Every HDF5 call's
// status is checked; a failure throws CheckpointError naming the file, the object and the call.
// HDF5's own error stack printing is silenced (our message says what failed).
//
//   Hdf5File f = Hdf5File::create_in_memory("rank-00000.h5");
//   f.write_floats("/model/lm_head.weight", data, {V, D});
//   f.set_attribute("/", "step", int64_t{1200});
//   std::vector<char> bytes = f.image();   // then write_file_durably(path, bytes...)
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

class Hdf5File {
   public:
    // A new file held in memory (HDF5's core driver); image() returns its bytes for the caller
    // to write with checked calls. Why: HDF5 1.10 cannot recover from a failed write to disk (a
    // full disk leaves a half-closed file that crashes the library at exit), while our own
    // write() loop fails cleanly, and one sequential write is also the fastest way to disk.
    // `path` names the file in messages.
    static Hdf5File create_in_memory(const std::string& path);
    static Hdf5File open_read(const std::string& path);
    ~Hdf5File();
    Hdf5File(Hdf5File&& o) noexcept;
    Hdf5File& operator=(Hdf5File&&) = delete;
    Hdf5File(const Hdf5File&) = delete;

    // Datasets are contiguous; parent groups are created as needed. `path` is absolute ("/a/b").
    // Creates the group and any missing parents (no-op when it exists).
    void create_group(const std::string& group);
    void write_floats(const std::string& path, const float* data, const std::vector<int64_t>& shape);
    void write_bytes(const std::string& path, const std::vector<uint8_t>& data);
    void set_attribute(const std::string& object, const std::string& name, int64_t value);
    void set_attribute(const std::string& object, const std::string& name, double value);
    void set_attribute(const std::string& object, const std::string& name, const std::string& value);

    bool exists(const std::string& path) const;
    std::vector<int64_t> shape(const std::string& dataset) const;
    // Reads a float32 dataset whose element count must be `count`.
    void read_floats(const std::string& dataset, float* out, int64_t count) const;
    std::vector<uint8_t> read_bytes(const std::string& dataset) const;
    int64_t attribute_int(const std::string& object, const std::string& name) const;
    double attribute_double(const std::string& object, const std::string& name) const;
    std::string attribute_string(const std::string& object, const std::string& name) const;
    // Names of the links directly under a group.
    std::vector<std::string> list(const std::string& group) const;

    // The whole file as bytes (after flushing HDF5's buffers); for create_in_memory files.
    std::vector<char> image() const;

    // Closes the file (flushing HDF5's buffers; the caller fsyncs). Further calls are errors.
    void close();
    const std::string& path() const { return path_; }

   private:
    Hdf5File(std::string path, hid_t id) : path_(std::move(path)), id_(id) {}
    [[noreturn]] void fail(const std::string& call, const std::string& object) const;

    std::string path_;
    hid_t id_ = -1;
};

}  // namespace moe
