// Golden reference for engine/aus/openface/fhog.py: dlib's own extract_fhog_features on one image.
//
// dlib's Python wheel does not expose FHOG extraction, so this harness calls the header-only C++
// function directly (the same call OpenFace 2.2 makes on its aligned face). Build it against the
// dlib source distribution (no dlib library or other source file is needed):
//
//     pip download --no-deps --no-binary :all: dlib==20.0.1 -d /tmp/dlibsrc
//     tar xzf /tmp/dlibsrc/dlib-20.0.1.tar.gz -C /tmp/dlibsrc
//     g++ -O2 -std=c++14 -DDLIB_NO_GUI_SUPPORT -I /tmp/dlibsrc/dlib-20.0.1 \
//         scripts/fhog_reference.cpp -o /tmp/fhog_reference
//
// (pip may go on to build dlib's build dependencies from source: the .tar.gz is in its download
// folder as soon as it prints "Downloading dlib-20.0.1.tar.gz".)
//
// Usage: fhog_reference CELL_SIZE INPUT OUTPUT
//   INPUT   binary PGM (P5, 8-bit gray -> dlib unsigned char image) or PPM (P6, 8-bit R G B ->
//           dlib bgr_pixel image, as OpenFace wraps its OpenCV BGR face with cv_image<bgr_pixel>)
//   OUTPUT  int32 rows, int32 cols, then rows * cols * 31 float32 (little endian), in the order
//           hog[row][col](o): the flattening OpenFace uses for its feature vector.

#include <dlib/array2d.h>
#include <dlib/image_transforms/fhog.h>
#include <dlib/matrix.h>
#include <dlib/pixel.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace
{
    // Next header token of a PNM file, skipping whitespace and '#' comments.
    long read_header_number(std::istream& in)
    {
        std::string token;
        while (in && token.empty())
        {
            const int ch = in.get();
            if (ch == '#')
            {
                std::string comment;
                std::getline(in, comment);
            }
            else if (ch != EOF && !std::isspace(ch))
            {
                token.push_back(static_cast<char>(ch));
                while (in && !std::isspace(in.peek()))
                    token.push_back(static_cast<char>(in.get()));
            }
        }
        return std::stol(token);
    }

    template <typename hog_type>
    void write_hog(const hog_type& hog, const char* path)
    {
        std::ofstream out(path, std::ios::binary);
        const int32_t rows = static_cast<int32_t>(hog.nr());
        const int32_t cols = static_cast<int32_t>(hog.nc());
        out.write(reinterpret_cast<const char*>(&rows), sizeof rows);
        out.write(reinterpret_cast<const char*>(&cols), sizeof cols);
        for (long r = 0; r < hog.nr(); ++r)
            for (long c = 0; c < hog.nc(); ++c)
                for (long o = 0; o < 31; ++o)
                {
                    const float value = hog[r][c](o);
                    out.write(reinterpret_cast<const char*>(&value), sizeof value);
                }
        if (!out)
            throw std::runtime_error(std::string("cannot write ") + path);
    }
}

int main(int argc, char** argv)
{
    if (argc != 4)
    {
        std::cerr << "usage: fhog_reference CELL_SIZE INPUT.pgm|INPUT.ppm OUTPUT.bin\n";
        return 2;
    }
    try
    {
        const int cell_size = std::atoi(argv[1]);
        std::ifstream in(argv[2], std::ios::binary);
        std::string magic(2, ' ');
        in.read(&magic[0], 2);
        if (magic != "P5" && magic != "P6")
            throw std::runtime_error("not a binary PGM/PPM file");
        const long width = read_header_number(in);
        const long height = read_header_number(in);
        if (read_header_number(in) != 255)
            throw std::runtime_error("only 8-bit images are supported");
        in.get();  // the single whitespace byte between the header and the pixels
        const long channels = magic == "P5" ? 1 : 3;
        std::vector<unsigned char> data(width * height * channels);
        in.read(reinterpret_cast<char*>(data.data()), data.size());
        if (!in)
            throw std::runtime_error("truncated image data");

        dlib::array2d<dlib::matrix<float, 31, 1>> hog;
        if (channels == 1)
        {
            dlib::array2d<unsigned char> img(height, width);
            for (long r = 0; r < height; ++r)
                for (long c = 0; c < width; ++c)
                    img[r][c] = data[r * width + c];
            dlib::extract_fhog_features(img, hog, cell_size);
        }
        else
        {
            dlib::array2d<dlib::bgr_pixel> img(height, width);
            for (long r = 0; r < height; ++r)
                for (long c = 0; c < width; ++c)
                {
                    const unsigned char* p = &data[(r * width + c) * 3];
                    img[r][c] = dlib::bgr_pixel(p[2], p[1], p[0]);
                }
            dlib::extract_fhog_features(img, hog, cell_size);
        }
        write_hog(hog, argv[3]);
    }
    catch (const std::exception& e)
    {
        std::cerr << "fhog_reference: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
