// A thin, checked wrapper over the HDF5 C API: just what checkpoints need. Every HDF5 call's
// status is checked; a failure throws CheckpointError naming the file, the object and the call.
// HDF5's own error stack printing is silenced (our message says what failed).
//
//   Hdf5File f = Hdf5File::create("rank-00000.h5");
//   int64_t at = f.reserve_floats("/model/lm_head.weight", {V, D});   // data goes at `at` later
//   f.set_attribute("/", "step", int64_t{1200});
//   f.close();
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

// Call before any HDF5 function (Hdf5File does): turns off HDF5's exit handler and its error
// printing. Idempotent.
void initialise_hdf5();

// "1.10.8": the HDF5 library this process runs with (for run records).
std::string hdf5_library_version();

class Hdf5File {
   public:
    static Hdf5File create(const std::string& path);     // truncates
    static Hdf5File open_read(const std::string& path);
    ~Hdf5File();
    Hdf5File(Hdf5File&& o) noexcept;
    Hdf5File& operator=(Hdf5File&&) = delete;
    Hdf5File(const Hdf5File&) = delete;

    // Datasets are contiguous; parent groups are created as needed. `path` is absolute ("/a/b").
    // Creates the group and any missing parents (no-op when it exists).
    void create_group(const std::string& group);
    // Creates a contiguous float32 dataset whose space is allocated in the file now but not
    // written (no fill); returns its byte offset in the file (-1 when it has no elements). The
    // caller writes the data there after close(): big tensors then go to disk in one pass of
    // plain checked writes, without passing through HDF5's buffers.
    int64_t reserve_floats(const std::string& path, const std::vector<int64_t>& shape);
    void write_bytes(const std::string& path, const std::vector<uint8_t>& data);
    void set_attribute(const std::string& object, const std::string& name, int64_t value);
    void set_attribute(const std::string& object, const std::string& name, double value);
    void set_attribute(const std::string& object, const std::string& name, const std::string& value);

    bool exists(const std::string& path) const;
    std::vector<int64_t> shape(const std::string& dataset) const;
    // "float32", "float64", "int16", ... ("other" + bits for anything else).
    std::string dtype(const std::string& dataset) const;
    // Reads a float32 dataset whose element count must be `count`.
    void read_floats(const std::string& dataset, float* out, int64_t count) const;
    // Reads a byte vector of at most `max_bytes` (checked before anything is allocated).
    std::vector<uint8_t> read_bytes(const std::string& dataset, int64_t max_bytes) const;
    // Throws unless the dataset keeps its data in this file: external storage (other files, even
    // /dev/zero) and virtual datasets are refused. read_floats and read_bytes call it.
    void check_plain_storage(const std::string& dataset) const;
    int64_t attribute_int(const std::string& object, const std::string& name) const;
    double attribute_double(const std::string& object, const std::string& name) const;
    std::string attribute_string(const std::string& object, const std::string& name) const;
    // Names of the links directly under a group.
    std::vector<std::string> list(const std::string& group) const;

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
